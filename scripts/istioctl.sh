#!/usr/bin/env bash
# Builds istioctl, the oracle of the differential tests (tests/mesh/
# istioctl_diff.rs: `trellis validate` and `trellis analyze` must give
# istioctl's verdicts), from the istio.io/istio Go module at the pinned
# version below, into a cache directory outside the repository, and reuses
# it when it is already there. The build is large (many minutes on two
# cores), so it runs at low priority.
#
#   scripts/istioctl.sh          build if needed; print the binary's path
#   scripts/istioctl.sh --where  only print the binary's path (builds nothing)
#
# The binary is $TRELLIS_ISTIOCTL if set, else
# ${TRELLIS_TOOLS_CACHE:-$HOME/.cache/trellis}/istioctl-<version>/istioctl.
set -euo pipefail

# istio.io/istio publishes no tagged Go module versions; this pseudo-version
# is the Istio master the module proxy serves (API istio.io/api v1.31).
version="v0.0.0-20260827124520-eed52ebb66ad"
binary="${TRELLIS_ISTIOCTL:-${TRELLIS_TOOLS_CACHE:-$HOME/.cache/trellis}/istioctl-$version/istioctl}"

if [[ "${1:-}" == "--where" || -x "$binary" ]]; then
  echo "$binary"
  exit 0
fi

command -v go >/dev/null || { echo "istioctl: go is not installed" >&2; exit 1; }
dir="$(dirname "$binary")"
mkdir -p "$dir"
start=$(date +%s)
echo "istioctl: building istio.io/istio/istioctl@$version into $dir" >&2
# Built into a scratch directory and renamed into place, so an interrupted
# build never leaves a binary that looks done. `go install pkg@version`
# builds outside any module: the repository's files stay as they are.
scratch="$(mktemp -d "$dir/.build.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
(cd / && CGO_ENABLED=0 GOBIN="$scratch" nice -n 10 \
  go install -trimpath -ldflags "-s -w" "istio.io/istio/istioctl/cmd/istioctl@$version")
mv "$scratch/istioctl" "$binary"
echo "istioctl: built in $(( $(date +%s) - start ))s" >&2
echo "$binary"
