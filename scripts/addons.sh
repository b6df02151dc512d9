#!/usr/bin/env bash
# Writes the cluster add-ons, ready for `kubectl apply -f DIR`: the
# committed manifests/addons/*.yaml (Prometheus, Grafana, Jaeger, the
# Prometheus Operator's monitors) plus grafana-dashboards.yaml, the two
# ConfigMaps Grafana's dashboard folders read (as Istio's samples/addons/
# grafana.yaml has them). The dashboards are Istio's own, unchanged, taken
# from the istio.io/istio Go module at the version scripts/istioctl.sh pins
# (fetched through the Go module proxy into the module cache if it is not
# there yet): they are not in this repository.
#
#   scripts/addons.sh [DIR]           default DIR: target/addons
#   scripts/addons.sh --operator-crds  print the directory of the Prometheus
#                                      Operator's CRDs (fetched if need be)
#
# monitors.yaml needs the Prometheus Operator's CRDs; leave it out (or apply
# it alone) where the operator is not installed.
set -euo pipefail

# The Prometheus Operator release whose CRDs the monitors are written for
# (the config reloader Istio's Prometheus sample runs is the same).
prometheus_operator="github.com/prometheus-operator/prometheus-operator@v0.89.0"

root="$(cd "$(dirname "$0")/.." && pwd)"
for tool in go jq; do
  command -v "$tool" >/dev/null || { echo "addons: $tool is not installed" >&2; exit 1; }
done
if [[ "${1:-}" == "--operator-crds" ]]; then
  dir="$(cd / && go mod download -json "$prometheus_operator" | jq -r .Dir)"
  echo "$dir/example/prometheus-operator-crd"
  exit 0
fi
out="${1:-$root/target/addons}"

module="$("$root/scripts/istioctl.sh" --module-dir)"
version="$(basename "$module")"   # istio@<version>
dashboards="$module/manifests/addons/dashboards"
[[ -d "$dashboards" ]] || { echo "addons: no $dashboards" >&2; exit 1; }

mkdir -p "$out"
cp "$root"/manifests/addons/*.yaml "$out/"

# Two ConfigMaps, named and split as Istio's (a ConfigMap holds at most
# 1 MiB), each dashboard on one line as Istio's gen.sh compacts them; a
# Kubernetes List in JSON, which kubectl reads as it reads YAML.
dashboard() { # KEY FILE: the ConfigMap entry for one dashboard
  jq -n --arg key "$1" --slurpfile d "$dashboards/$2" '{($key): ($d[0] | tojson)}'
}
configmap() { # NAME ENTRY...: a ConfigMap of the entries
  local name="$1"
  shift
  jq -s --arg name "$name" --arg from "istio.io/$version" '{apiVersion: "v1", kind: "ConfigMap",
    metadata: {name: $name, namespace: "istio-system",
      annotations: {"trellis.io/generated-from": ($from + " manifests/addons/dashboards")}},
    data: add}' <(for e in "$@"; do echo "$e"; done)
}
{
  configmap istio-grafana-dashboards \
    "$(dashboard pilot-dashboard.json pilot-dashboard.gen.json)" \
    "$(dashboard ztunnel-dashboard.json ztunnel-dashboard.gen.json)" \
    "$(dashboard istio-performance-dashboard.json istio-performance-dashboard.json)"
  configmap istio-services-grafana-dashboards \
    "$(dashboard istio-mesh-dashboard.json istio-mesh-dashboard.gen.json)" \
    "$(dashboard istio-service-dashboard.json istio-service-dashboard.json)" \
    "$(dashboard istio-workload-dashboard.json istio-workload-dashboard.json)" \
    "$(dashboard istio-extension-dashboard.json istio-extension-dashboard.json)"
} | jq -s '{apiVersion: "v1", kind: "List", items: .}' > "$out/grafana-dashboards.yaml"

echo "$out"
