#!/usr/bin/env bash
# Builds pilot-discovery (istiod's discovery server), the other side of the
# control-plane benchmark (bench/control-plane-vs-istiod.sh), from the same
# istio.io/istio Go module version as scripts/istioctl.sh, into the same
# cache directory outside the repository, and reuses it when it is already
# there. Only the benchmark needs it; no test does. The build is large (many
# minutes on two cores), so it runs at low priority.
#
#   scripts/istiod.sh          build if needed; print the binary's path
#   scripts/istiod.sh --where  only print the binary's path (builds nothing)
#
# The binary is $TRELLIS_PILOT_DISCOVERY if set, else
# ${TRELLIS_TOOLS_CACHE:-$HOME/.cache/trellis}/istiod-<version>/pilot-discovery.
set -euo pipefail

# The pin is scripts/istioctl.sh's: both must be the same Istio.
version="$(sed -n 's/^version="\(.*\)"$/\1/p' "$(dirname "$0")/istioctl.sh")"
[[ -n "$version" ]] || { echo "istiod: no version pin found in scripts/istioctl.sh" >&2; exit 1; }
binary="${TRELLIS_PILOT_DISCOVERY:-${TRELLIS_TOOLS_CACHE:-$HOME/.cache/trellis}/istiod-$version/pilot-discovery}"

if [[ "${1:-}" == "--where" || -x "$binary" ]]; then
  echo "$binary"
  exit 0
fi

command -v go >/dev/null || { echo "istiod: go is not installed" >&2; exit 1; }
dir="$(dirname "$binary")"
mkdir -p "$dir"
start=$(date +%s)
echo "istiod: building istio.io/istio/pilot/cmd/pilot-discovery@$version into $dir" >&2
# Built into a scratch directory and renamed into place, so an interrupted
# build never leaves a binary that looks done. `go install pkg@version`
# builds outside any module: the repository's files stay as they are.
scratch="$(mktemp -d "$dir/.build.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
(cd / && CGO_ENABLED=0 GOBIN="$scratch" nice -n 10 \
  go install -trimpath -ldflags "-s -w" "istio.io/istio/pilot/cmd/pilot-discovery@$version")
mv "$scratch/pilot-discovery" "$binary"
echo "istiod: built in $(( $(date +%s) - start ))s" >&2
echo "$binary"
