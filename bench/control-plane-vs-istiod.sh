#!/usr/bin/env bash
# trellisd and istiod side by side, on this machine, fed the same mesh: the
# files bench-control-plane writes (--format service-entries: 1,000
# ServiceEntries of 10 endpoints, a VirtualService and DestinationRule per
# ten services, an AuthorizationPolicy per namespace) and the same changes.
#
#   bench/control-plane-vs-istiod.sh [PROXIES...]     (default: 100 1000)
#
# trellisd: bench-control-plane (release, from $CARGO_TARGET_DIR or target/)
# starts it and simulates its proxies; it reads the mesh from the files and
# takes the changes through its API. istiod: pilot-discovery built by
# scripts/istiod.sh, run as on a cluster: a fresh etcd + kube-apiserver (from
# scripts/kube-tools.sh, with Istio's CRDs) holds the same objects, applied
# before istiod starts, and each change is applied to it (server-side apply,
# one request per object); its proxies are simulated by bench/xds-load
# (Envoy's ADS, state of the world, ACKing as Envoy does). Why not the same
# source for both: on a cluster trellisd serves only proxies that present a
# service-account token over TLS (it has no unauthenticated 15010 as istiod
# has), and istiod's own file source (--configDir) re-reads the whole
# directory on every change, which is not how istiod runs. The two never run
# at the same time. Results: $OUT (default target/control-plane-vs-istiod/),
# one JSON per control plane and proxy count, and a table on stdout.
#
# Environment: SERVICES (1000), ENDPOINTS (10), NAMESPACES (10),
# CHANGES (10 endpoint changes), VS_CHANGES (3), SIDECARS (1: a Sidecar per
# namespace limits its proxies' egress to it, and a change is timed to the
# proxies of its namespace only; results named *-sidecars.json),
# ISTIOD_TIMEOUT (seconds istiod's run may take, default 1200: at 2,000
# proxies it is slow).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
release="${CARGO_TARGET_DIR:-$root/target}/release"
out="${OUT:-${CARGO_TARGET_DIR:-$root/target}/control-plane-vs-istiod}"
services="${SERVICES:-1000}"
endpoints="${ENDPOINTS:-10}"
namespaces="${NAMESPACES:-10}"
changes="${CHANGES:-10}"
vs_changes="${VS_CHANGES:-3}"
sidecars="${SIDECARS:-0}"
istiod_timeout="${ISTIOD_TIMEOUT:-1200}"
proxies=("$@")
[[ ${#proxies[@]} -gt 0 ]] || proxies=(100 1000)

bench="$release/bench-control-plane"
[[ -x "$bench" && -x "$release/trellisd" ]] || {
  echo "build first: cargo build --release -p bench -p cli" >&2
  exit 1
}
pilot="$("$root/scripts/istiod.sh")"
mkdir -p "$out"
# Many connections on both sides.
ulimit -n "$(ulimit -Hn)"

work="$(mktemp -d "${TMPDIR:-/tmp}/cp-vs-istiod.XXXXXX")"
istiod_pid="" etcd_pid="" apiserver_pid=""
# stop, free_port, kube_start: one way to start a cluster and stop processes.
source "$root/bench/kube-cluster.sh"
cleanup() {
  stop "$istiod_pid" "$apiserver_pid" "$etcd_pid"
  rm -rf "$work"
}
trap cleanup EXIT

(cd "$root/bench/xds-load" && go build -o "$work/xds-load" .)

shape=(--services "$services" --endpoints-per-service "$endpoints" --namespaces "$namespaces"
  --changes "$changes" --vs-changes "$vs_changes" --format service-entries)
scoping=() suffix=""
if [[ "$sidecars" == 1 ]]; then
  shape+=(--sidecars)
  scoping=(-sidecars)
  suffix="-sidecars"
fi

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for n in "${proxies[@]}"; do
  echo "== trellisd, $n proxies" >&2
  "$bench" "${shape[@]}" --proxies "$n" --json "$out/trellisd-$n$suffix.json" >&2

  echo "== istiod, $n proxies" >&2
  rm -rf "$work/istiod"
  "$bench" "${shape[@]}" --write-mesh "$work/istiod"
  kube_start "$work/istiod/kube"
  "${kubectl[@]}" create namespace istio-system >/dev/null
  for ((ns = 0; ns < namespaces; ns++)); do "${kubectl[@]}" create namespace "ns$ns" >/dev/null; done
  "${kubectl[@]}" apply --server-side -f "$work/istiod/mesh" >/dev/null
  mkdir -p "$work/istiod/etc"
  # Istio's defaults; the files only have to exist.
  echo "rootNamespace: istio-system" >"$work/istiod/etc/mesh"
  echo "{}" >"$work/istiod/etc/meshNetworks"
  grpc="$(free_port)" monitoring="$(free_port)" http="$(free_port)"
  # As on a cluster, but: no CA (the proxies connect on plaintext 15010 and
  # ask for no certificate), no webhooks (nothing to inject or validate), no
  # config analysis, no VIPs allocated to the ServiceEntries (each allocation
  # is a status write and a push: a churn of 1,000 pushes after the start,
  # which trellisd does not have to do); connections kept 30 min as Istio's
  # chart keeps them.
  (cd "$work/istiod" &&
    POD_NAMESPACE=istio-system POD_NAME=istiod-bench ENABLE_CA_SERVER=false PILOT_ENABLE_IP_AUTOALLOCATE=false \
      PILOT_ENABLE_ANALYSIS=false \
      exec "$pilot" discovery --kubeconfig "$work/istiod/kube/kubeconfig" --domain cluster.local \
      --meshConfig "$work/istiod/etc/mesh" --networksConfig "$work/istiod/etc/meshNetworks" \
      --keepaliveMaxServerConnectionAge 30m \
      --grpcAddr "127.0.0.1:$grpc" --httpAddr "127.0.0.1:$http" \
      --monitoringAddr "127.0.0.1:$monitoring" --secureGRPCAddr= --httpsAddr= \
      --log_output_level default:warn) >"$out/istiod-$n.log" 2>&1 &
  istiod_pid=$!
  for _ in $(seq 1 600); do
    curl -sf "http://127.0.0.1:$http/ready" >/dev/null && break
    kill -0 "$istiod_pid" 2>/dev/null || {
      echo "istiod exited; log: $out/istiod-$n.log" >&2
      exit 1
    }
    sleep 0.2
  done
  echo "istiod ready: RSS $(awk '/VmRSS/{print $2/1024 " MiB"}' "/proc/$istiod_pid/status")" >&2
  timeout "$istiod_timeout" "$work/xds-load" "${scoping[@]}" -addr "127.0.0.1:$grpc" -proxies "$n" -namespaces "$namespaces" \
    -pid "$istiod_pid" -changes "$work/istiod/changes" -monitoring "127.0.0.1:$monitoring" \
    -kube-server "$kube_server" -kube-ca "$work/istiod/kube/ca.crt" -kube-token "$work/istiod/kube/token" \
    -json "$out/istiod-$n$suffix.json" >/dev/null
  stop "$istiod_pid" "$apiserver_pid" "$etcd_pid"
  istiod_pid="" apiserver_pid="" etcd_pid=""
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

row() { # figure, jq expression, unit
  printf '| %s |' "$1"
  for n in "${proxies[@]}"; do
    t="$(jq -r "$2" "$out/trellisd-$n$suffix.json")" i="$(jq -r "$2" "$out/istiod-$n$suffix.json")"
    printf ' %s / %s %s (%s×) |' "$t" "$i" "$3" "$(jq -n "if $t > 0 then ($i / $t * 10 | round / 10) else \"-\" end")"
  done
  echo
}
printf '| trellisd / istiod, ratio istiod÷trellisd |'
printf ' %s proxies |' "${proxies[@]}"
echo
printf '|---|'
printf -- '---|%.0s' "${proxies[@]}"
echo
row "all proxies configured" '.full_push_ms' ms
row "endpoint change → all proxies, p50" '.endpoint_change_p50_ms | round' ms
row "endpoint change → all proxies, p99" '.endpoint_change_p99_ms | round' ms
row "VirtualService change → all proxies, p50" '.vs_change_p50_ms | round' ms
row "VirtualService change → all proxies, p99" '.vs_change_p99_ms | round' ms
row "RSS after the full push" '.rss_connected_mib | round' MiB
row "RSS peak" '.rss_peak_mib | round' MiB
row "CPU, connect + full push" '.cpu_seconds_full_push * 10 | round / 10' s
row "CPU, whole run" '.cpu_seconds * 10 | round / 10' s
row "bytes per proxy, full push" '.bytes_per_proxy_full_push / 1024 | round' KiB
row "bytes per proxy per endpoint change" '.bytes_per_proxy_per_endpoint_change | round' B
# istiod's own figure for the timed changes (from a change's push trigger to
# the proxy's ACK), a cross-check of xds-load's.
for n in "${proxies[@]}"; do
  jq -r --arg n "$n" '.pilot_proxy_convergence_time_changes // {} |
    "istiod, \($n) proxies: pilot_proxy_convergence_time over the changes: \(.pilot_proxy_convergence_time_count // 0) pushes, mean \(if (.pilot_proxy_convergence_time_count // 0) > 0 then (.pilot_proxy_convergence_time_sum / .pilot_proxy_convergence_time_count * 1000 | round) else "-" end) ms, ≤ 100 ms: \(.["pilot_proxy_convergence_time_bucket{le=\"0.1\"}"] // 0), ≤ 1 s: \(.["pilot_proxy_convergence_time_bucket{le=\"1\"}"] // 0)"' \
    "$out/istiod-$n$suffix.json"
done
