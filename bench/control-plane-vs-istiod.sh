#!/usr/bin/env bash
# trellisd and istiod side by side, on this machine, fed the same mesh: the
# files bench-control-plane writes (--format service-entries: 1,000
# ServiceEntries of 10 endpoints, a VirtualService and DestinationRule per
# ten services, an AuthorizationPolicy per namespace) and the same changes.
#
#   bench/control-plane-vs-istiod.sh [PROXIES...]     (default: 100 1000)
#
# trellisd: bench-control-plane (release, from $CARGO_TARGET_DIR or target/)
# starts it and simulates its proxies. istiod: pilot-discovery built by
# scripts/istiod.sh, reading the mesh from files (--configDir, no
# Kubernetes), its proxies simulated by bench/xds-load (Envoy's ADS, state
# of the world, ACKing as Envoy does). The two never run at the same time.
# Results: $OUT (default target/control-plane-vs-istiod/), one JSON per
# control plane and proxy count, and a table on stdout.
#
# Environment: SERVICES (1000), ENDPOINTS (10), NAMESPACES (10),
# CHANGES (10 endpoint changes), VS_CHANGES (3).
#
# Status: the istiod half does not run yet. pilot-discovery at this pin
# cannot start without a Kubernetes config cluster: with --configDir and no
# registry it panics in serviceentry.newController (a nil multicluster
# controller's ConfigCluster()). Next step: start etcd and kube-apiserver
# from scripts/kube-tools.sh (as tests/support/kube.rs does) and give istiod
# --kubeconfig, keeping --configDir for the mesh. The trellisd half runs.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
release="${CARGO_TARGET_DIR:-$root/target}/release"
out="${OUT:-${CARGO_TARGET_DIR:-$root/target}/control-plane-vs-istiod}"
services="${SERVICES:-1000}"
endpoints="${ENDPOINTS:-10}"
namespaces="${NAMESPACES:-10}"
changes="${CHANGES:-10}"
vs_changes="${VS_CHANGES:-3}"
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
istiod_pid=""
cleanup() {
  [[ -n "$istiod_pid" ]] && kill "$istiod_pid" 2>/dev/null && wait "$istiod_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

(cd "$root/bench/xds-load" && go build -o "$work/xds-load" .)

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

shape=(--services "$services" --endpoints-per-service "$endpoints" --namespaces "$namespaces"
  --changes "$changes" --vs-changes "$vs_changes" --format service-entries)

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for n in "${proxies[@]}"; do
  echo "== trellisd, $n proxies" >&2
  "$bench" "${shape[@]}" --proxies "$n" --json "$out/trellisd-$n.json" >&2

  echo "== istiod, $n proxies" >&2
  rm -rf "$work/istiod"
  "$bench" "${shape[@]}" --write-mesh "$work/istiod"
  mkdir -p "$work/istiod/etc"
  # Istio's defaults; the file only has to exist so that no API server is asked.
  echo "rootNamespace: istio-system" >"$work/istiod/etc/mesh"
  echo "{}" >"$work/istiod/etc/meshNetworks"
  grpc="$(free_port)" monitoring="$(free_port)" http="$(free_port)"
  (cd "$work/istiod" &&
    POD_NAMESPACE=istio-system POD_NAME=istiod-bench ENABLE_CA_SERVER=false \
      PILOT_ENABLE_ANALYSIS=false \
      exec "$pilot" discovery --registries= --configDir "$work/istiod/mesh" \
      --meshConfig "$work/istiod/etc/mesh" --networksConfig "$work/istiod/etc/meshNetworks" \
      --grpcAddr "127.0.0.1:$grpc" --httpAddr "127.0.0.1:$http" \
      --monitoringAddr "127.0.0.1:$monitoring" --secureGRPCAddr "" --httpsAddr "" \
      --log_output_level default:warn) >"$out/istiod-$n.log" 2>&1 &
  istiod_pid=$!
  for _ in $(seq 1 600); do
    curl -sf "http://127.0.0.1:$http/ready" >/dev/null && break
    kill -0 "$istiod_pid" 2>/dev/null || {
      echo "istiod exited (without a Kubernetes config cluster it does; see the header); log: $out/istiod-$n.log" >&2
      exit 1
    }
    sleep 0.2
  done
  echo "istiod ready: RSS $(awk '/VmRSS/{print $2/1024 " MiB"}' "/proc/$istiod_pid/status")" >&2
  "$work/xds-load" -addr "127.0.0.1:$grpc" -proxies "$n" -namespaces "$namespaces" \
    -pid "$istiod_pid" -mesh "$work/istiod/mesh" -changes "$work/istiod/changes" \
    -monitoring "127.0.0.1:$monitoring" -json "$out/istiod-$n.json" >/dev/null
  kill "$istiod_pid"
  wait "$istiod_pid" 2>/dev/null || true
  istiod_pid=""
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

row() { # figure, jq expression, unit
  printf '| %s |' "$1"
  for n in "${proxies[@]}"; do
    t="$(jq -r "$2" "$out/trellisd-$n.json")" i="$(jq -r "$2" "$out/istiod-$n.json")"
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
