#!/usr/bin/env bash
# Builds istioctl, the oracle of the differential tests (tests/mesh/
# istioctl_diff.rs: `trellis validate` and `trellis analyze` must give
# istioctl's verdicts), from the istio.io/istio Go module at the pin in
# scripts/istio-module.sh, into a cache directory outside the repository,
# and reuses it when it is already there.
#
#   scripts/istioctl.sh          build if needed; print the binary's path
#   scripts/istioctl.sh --where  only print the binary's path (builds nothing)
#   scripts/istioctl.sh --module-dir  print the istio.io/istio module's source
#                                directory (Istio's dashboards, analyzer tests)
#
# The binary is $TRELLIS_ISTIOCTL if set, else
# ${TRELLIS_TOOLS_CACHE:-$HOME/.cache/trellis}/istioctl-<version>/istioctl.
set -euo pipefail
source "$(dirname "$0")/istio-module.sh"

if [[ "${1:-}" == "--module-dir" ]]; then
  istio_module_dir
  exit 0
fi
binary="$(istio_binary istioctl TRELLIS_ISTIOCTL istioctl)"
if [[ "${1:-}" != "--where" && ! -x "$binary" ]]; then
  istio_build istioctl "$binary" istioctl/cmd/istioctl
fi
echo "$binary"
