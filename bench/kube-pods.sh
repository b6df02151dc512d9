#!/usr/bin/env bash
# trellisd's memory after it lists many pods from a kube-apiserver (issue 20).
#
#   bench/kube-pods.sh [--pods N] [--replicasets N] [--namespaces N]
#                      [--settle SECONDS] [--rounds N] TRELLISD...
#
# Starts a fresh etcd and kube-apiserver on loopback with Istio's CRDs, as
# bench/control-plane-vs-istiod.sh does (bench/kube-cluster.sh; no controller-manager,
# so nothing schedules or runs the pods), creates the namespaces, each with its
# `default` ServiceAccount and one per app (the API server's ServiceAccount
# admission waits for the one a pod names, and no controller makes them),
# and the pods: --pods (5,000) of --replicasets (500) in --namespaces (10),
# as Istio's injector leaves them (labels, annotations, sidecar and init
# container, volumes), created with kubectl in parallel, a namespace each.
# Then, --rounds times (2), each TRELLISD in turn (alternated, so load
# changes fall on all alike) runs against it with --kubeconfig: the time
# from its start to "Kubernetes source synced" (the list), and its
# /proc/PID/status --settle seconds (15) after that line. A first run of
# the first TRELLISD, not reported, makes what a first replica makes on a
# cluster (the CA Secret, root certificate ConfigMaps); the Lease is
# deleted between runs, so every run leads at once.
#
# Prints one line per run: binary, list seconds, VmRSS, RssAnon, VmHWM
# (MiB). Work directory (logs, manifests) removed at exit unless KEEP=1.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
pods=5000 replicasets=500 namespaces=10 settle=15 rounds=2
binaries=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --pods) pods="$2"; shift 2 ;;
    --replicasets) replicasets="$2"; shift 2 ;;
    --namespaces) namespaces="$2"; shift 2 ;;
    --settle) settle="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) binaries+=("$1"); shift ;;
  esac
done
[[ ${#binaries[@]} -gt 0 ]] || { echo "usage: $0 [options] TRELLISD... (--help)" >&2; exit 2; }

work="$(mktemp -d "${TMPDIR:-/tmp}/kube-pods.XXXXXX")"
etcd_pid="" apiserver_pid="" trellisd_pid="" kubectl=()
# stop, free_port, kube_start: one way to start a cluster and stop processes.
source "$root/bench/kube-cluster.sh"
cleanup() {
  stop "$trellisd_pid" "$apiserver_pid" "$etcd_pid"
  [[ "${KEEP:-0}" == 1 ]] && echo "kept $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }'; }

# --- the cluster (etcd, kube-apiserver, Istio's CRDs).
kube_start "$work/kube"
kubeconfig="$work/kube/kubeconfig"

# --- the namespaces and service accounts, then the pods, a List per namespace.
python3 - "$work" "$pods" "$replicasets" "$namespaces" <<'PY'
import json, sys
work, pods, replicasets, namespaces = sys.argv[1], *map(int, sys.argv[2:])
per_rs = pods // replicasets
items = {n: [] for n in range(namespaces)}
def namespace(n): return f"bench-{n}"
first = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}}
         for n in ["istio-system"] + [namespace(n) for n in range(namespaces)]]
first += [{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": namespace(n)}}
          for n in range(namespaces)]
for rs in range(replicasets):
    n, app = rs // 2 % namespaces, f"svc-{rs // 2}"
    version = f"v{rs % 2 + 1}"
    ns, hash_ = namespace(n), f"{rs:05x}f8c"
    if rs % 2 == 0:
        first.append({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": app, "namespace": ns}})
    for i in range(per_rs):
        name = f"{app}-{version}-{hash_}-{i:05d}"
        items[n].append({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": name, "namespace": ns,
                "labels": {"app": app, "version": version, "pod-template-hash": hash_,
                           "security.istio.io/tlsMode": "istio",
                           "service.istio.io/canonical-name": app,
                           "service.istio.io/canonical-revision": version},
                "annotations": {
                    "istio.io/rev": "default",
                    "kubectl.kubernetes.io/default-container": app,
                    "kubectl.kubernetes.io/default-logs-container": app,
                    "prometheus.io/path": "/stats/prometheus", "prometheus.io/port": "15020",
                    "prometheus.io/scrape": "true",
                    "sidecar.istio.io/status": json.dumps({"initContainers": ["istio-init"], "containers": ["istio-proxy"], "volumes": ["workload-socket", "credential-socket", "workload-certs", "istio-envoy", "istio-data", "istio-podinfo", "istio-token", "istiod-ca-cert"], "imagePullSecrets": None, "revision": "default"}),
                },
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": f"{app}-{version}-{hash_}",
                                     "uid": f"00000000-0000-0000-0000-{rs:012d}", "controller": True, "blockOwnerDeletion": True}],
            },
            "spec": {
                "serviceAccountName": app,
                "initContainers": [{"name": "istio-init", "image": "docker.io/istio/proxyv2:1.28.0",
                    "args": ["istio-iptables", "-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i", "*", "-x", "", "-b", "*", "-d", "15090,15021,15020", "--log_output_level=default:info"],
                    "resources": {"limits": {"cpu": "2", "memory": "1Gi"}, "requests": {"cpu": "10m", "memory": "40Mi"}},
                    "securityContext": {"capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]}, "runAsUser": 0, "runAsNonRoot": False}}],
                "containers": [
                    {"name": app, "image": f"registry.example/{app}:{version}",
                     "ports": [{"containerPort": 9080, "name": "http", "protocol": "TCP"}]},
                    {"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.28.0",
                     "args": ["proxy", "sidecar", "--domain", "$(POD_NAMESPACE).svc.cluster.local", "--proxyLogLevel=warning", "--proxyComponentLogLevel=misc:error", "--log_output_level=default:info"],
                     "env": [{"name": k, "value": v} for k, v in [
                         ("PILOT_CERT_PROVIDER", "istiod"), ("CA_ADDR", "istiod.istio-system.svc:15012"),
                         ("ISTIO_CPU_LIMIT", "2"), ("PROXY_CONFIG", "{}"), ("ISTIO_META_POD_PORTS", '[{"name":"http","containerPort":9080,"protocol":"TCP"}]'),
                         ("ISTIO_META_APP_CONTAINERS", app), ("GOMEMLIMIT", "1073741824"), ("GOMAXPROCS", "2"),
                         ("ISTIO_META_CLUSTER_ID", "Kubernetes"), ("ISTIO_META_NODE_NAME", "node-1"),
                         ("ISTIO_META_INTERCEPTION_MODE", "REDIRECT"), ("ISTIO_META_WORKLOAD_NAME", f"{app}-{version}"),
                         ("ISTIO_META_OWNER", f"kubernetes://apis/apps/v1/namespaces/{ns}/deployments/{app}-{version}"),
                         ("ISTIO_META_MESH_ID", "cluster.local"), ("TRUST_DOMAIN", "cluster.local")]]
                         + [{"name": k, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": f}}} for k, f in [
                         ("POD_NAME", "metadata.name"), ("POD_NAMESPACE", "metadata.namespace"),
                         ("INSTANCE_IP", "status.podIP"), ("SERVICE_ACCOUNT", "spec.serviceAccountName"), ("HOST_IP", "status.hostIP")]],
                     "ports": [{"containerPort": 15090, "name": "http-envoy-prom", "protocol": "TCP"}],
                     "readinessProbe": {"httpGet": {"path": "/healthz/ready", "port": 15021}, "failureThreshold": 4, "periodSeconds": 15, "timeoutSeconds": 3},
                     "resources": {"limits": {"cpu": "2", "memory": "1Gi"}, "requests": {"cpu": "10m", "memory": "40Mi"}},
                     "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "readOnlyRootFilesystem": True, "runAsGroup": 1337, "runAsNonRoot": True, "runAsUser": 1337},
                     "volumeMounts": [{"mountPath": p, "name": v} for v, p in [
                         ("workload-socket", "/var/run/secrets/workload-spiffe-uds"), ("credential-socket", "/var/run/secrets/credential-uds"),
                         ("workload-certs", "/var/run/secrets/workload-spiffe-credentials"), ("istiod-ca-cert", "/var/run/secrets/istio"),
                         ("istio-data", "/var/lib/istio/data"), ("istio-envoy", "/etc/istio/proxy"),
                         ("istio-token", "/var/run/secrets/tokens"), ("istio-podinfo", "/etc/istio/pod")]]},
                ],
                "volumes": [{"name": v, "emptyDir": {}} for v in ["workload-socket", "credential-socket", "workload-certs", "istio-data"]]
                    + [{"name": "istio-envoy", "emptyDir": {"medium": "Memory"}},
                       {"name": "istio-podinfo", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}, {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}}]}},
                       {"name": "istio-token", "projected": {"sources": [{"serviceAccountToken": {"audience": "istio-ca", "expirationSeconds": 43200, "path": "istio-token"}}]}},
                       {"name": "istiod-ca-cert", "configMap": {"name": "istio-ca-root-cert"}}],
            },
        })
with open(f"{work}/namespaces.json", "w") as f:
    json.dump({"apiVersion": "v1", "kind": "List", "items": first}, f)
for n, its in items.items():
    with open(f"{work}/pods-{n}.json", "w") as f:
        json.dump({"apiVersion": "v1", "kind": "List", "items": its}, f)
PY
"${kubectl[@]}" create -f "$work/namespaces.json" >/dev/null
# Pods are admitted once the API server's informer has their service account.
"${kubectl[@]}" wait --for=create -n "bench-$((namespaces - 1))" serviceaccount/default --timeout=30s >/dev/null
sleep 1
started=$(date +%s.%N)
creators=()
for ((n = 0; n < namespaces; n++)); do
  "${kubectl[@]}" create -f "$work/pods-$n.json" >"$work/create-$n.log" 2>&1 &
  creators+=($!)
done
for pid in "${creators[@]}"; do wait "$pid" || { echo "kubectl create failed: $work/create-*.log" >&2; exit 1; }; done
echo "$("${kubectl[@]}" get pods -A --no-headers | wc -l) pods created in $(since "$started") s; load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2

# --- trellisd, run by run.
mib() { awk -v k="$1:" '$1 == k { printf "%.1f", $2 / 1024 }' "/proc/$2/status"; }
run() { # BINARY: sets result to "list_s VmRSS RssAnon VmHWM"
  local dir log began
  dir="$(mktemp -d "$work/trellisd.XXXXXX")" log="$dir/trellisd.log"
  : >"$log"
  "${kubectl[@]}" delete lease -n istio-system trellisd-leader --ignore-not-found >/dev/null
  began=$(date +%s.%N)
  "$1" --kubeconfig "$kubeconfig" --config-dir "$dir/config" --ca-dir "$dir/ca" \
    --xds-addr "127.0.0.1:$(free_port)" --xds-tls-addr "127.0.0.1:$(free_port)" --http-addr "127.0.0.1:$(free_port)" \
    >"$log" 2>&1 &
  trellisd_pid=$!
  for _ in $(seq 1 1200); do
    grep -q "Kubernetes source synced" "$log" && break
    kill -0 "$trellisd_pid" 2>/dev/null || { echo "trellisd exited: $log" >&2; cat "$log" >&2; exit 1; }
    sleep 0.05
  done
  result="$(since "$began")"
  sleep "$settle"
  result+=" $(mib VmRSS "$trellisd_pid") $(mib RssAnon "$trellisd_pid") $(mib VmHWM "$trellisd_pid")"
  stop "$trellisd_pid"
  trellisd_pid=""
}
run "${binaries[0]}"
printf '%-40s %7s %7s %7s %7s\n' binary list_s VmRSS RssAnon VmHWM
for ((r = 1; r <= rounds; r++)); do
  for b in "${binaries[@]}"; do
    run "$b"
    read -r list rss anon hwm <<<"$result"
    printf '%-40s %7s %7s %7s %7s\n' "$b" "$list" "$rss" "$anon" "$hwm"
  done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
