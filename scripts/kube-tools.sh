#!/usr/bin/env bash
# Builds the Kubernetes control plane the tests run against (etcd,
# kube-apiserver, kube-controller-manager, kubectl) from the Go module proxy at
# the versions scripts/kube-tools/go.mod pins, into a cache directory outside
# the repository, and reuses it when it is already there. Beside them it puts
# Istio's published CRDs (istio-crds.yaml, from the istio.io/api module at
# $istio_api below), which the tests install as on an Istio cluster, and
# helm ($helm below), with which a test renders manifests/charts/.
#
#   scripts/kube-tools.sh          build if needed; print the directory
#   scripts/kube-tools.sh --where  only print the directory (builds nothing)
#
# The directory is $TRELLIS_KUBE_TOOLS if set, else
# ${TRELLIS_TOOLS_CACHE:-$HOME/.cache/trellis}/kube-<k8s version>-etcd-<etcd version>.
set -euo pipefail
src="$(cd "$(dirname "$0")/kube-tools" && pwd)"

version_of() { awk -v m="$1" '$1 == m { print $2; exit }' "$src/go.mod"; }
k8s_version="$(version_of k8s.io/kubernetes)"
etcd_version="$(version_of go.etcd.io/etcd/server/v3)"
istio_api="istio.io/api@v1.31.4"
helm="helm.sh/helm/v4/cmd/helm@v4.3.2"
dir="${TRELLIS_KUBE_TOOLS:-${TRELLIS_TOOLS_CACHE:-$HOME/.cache/trellis}/kube-$k8s_version-etcd-$etcd_version}"
programs=(etcd kube-apiserver kube-controller-manager kubectl helm)

if [[ "${1:-}" == "--where" ]]; then
  echo "$dir"
  exit 0
fi

missing=()
for p in "${programs[@]}"; do [[ -x "$dir/$p" ]] || missing+=("$p"); done
if [[ ${#missing[@]} == 0 && -f "$dir/istio-crds.yaml" ]]; then
  echo "$dir"
  exit 0
fi

command -v go >/dev/null || { echo "kube-tools: go is not installed" >&2; exit 1; }
export GOFLAGS=-mod=mod CGO_ENABLED=0
mkdir -p "$dir"
start=$(date +%s)

# Each file is written beside its final name and renamed into place, so an
# interrupted build never leaves a file that looks done.
install_file() { chmod "$1" "$dir/$2.partial"; mv "$dir/$2.partial" "$dir/$2"; }

if [[ ! -f "$dir/istio-crds.yaml" ]]; then
  # Downloaded outside any module, so go.mod and go.sum stay as they are.
  module_dir="$(cd / && go mod download -json "$istio_api" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')"
  cp "$module_dir/kubernetes/customresourcedefinitions.gen.yaml" "$dir/istio-crds.yaml.partial"
  install_file 0644 istio-crds.yaml
fi

if [[ ${#missing[@]} != 0 ]]; then
  echo "kube-tools: building ${missing[*]} (Kubernetes $k8s_version, etcd $etcd_version) into $dir" >&2
  # The version the binaries report (kubectl version, /version), as the
  # project's release build stamps it.
  minor="${k8s_version#v*.}"; minor="${minor%%.*}"
  stamp="-X k8s.io/component-base/version.gitVersion=$k8s_version
         -X k8s.io/component-base/version.gitMajor=1
         -X k8s.io/component-base/version.gitMinor=$minor
         -X k8s.io/client-go/pkg/version.gitVersion=$k8s_version
         -X k8s.io/client-go/pkg/version.gitMajor=1
         -X k8s.io/client-go/pkg/version.gitMinor=$minor"
  cd "$src"
  for p in "${missing[@]}"; do
    case "$p" in
      etcd) go build -trimpath -ldflags "-s -w" -o "$dir/etcd.partial" go.etcd.io/etcd/server/v3 ;;
      # Outside the module (its own dependency versions, go.mod untouched).
      helm) (cd / && GOBIN="$dir/helm-bin" go install -trimpath -ldflags "-s -w" "$helm") && mv "$dir/helm-bin/helm" "$dir/helm.partial" && rmdir "$dir/helm-bin" ;;
      *) go build -trimpath -ldflags "-s -w $stamp" -o "$dir/$p.partial" "k8s.io/kubernetes/cmd/$p" ;;
    esac
    install_file 0755 "$p"
  done
  echo "kube-tools: built in $(( $(date +%s) - start ))s; $(du -sh "$dir" | cut -f1) in $dir" >&2
fi
echo "$dir"
