#!/usr/bin/env bash
# Builds pilot-discovery (istiod's discovery server), the other side of the
# control-plane benchmark (bench/control-plane-vs-istiod.sh), from the same
# istio.io/istio Go module version as scripts/istioctl.sh (the pin in
# scripts/istio-module.sh), into the same cache directory outside the
# repository, and reuses it when it is already there. Only the benchmark
# needs it; no test does.
#
#   scripts/istiod.sh          build if needed; print the binary's path
#   scripts/istiod.sh --where  only print the binary's path (builds nothing)
#
# The binary is $TRELLIS_PILOT_DISCOVERY if set, else
# ${TRELLIS_TOOLS_CACHE:-$HOME/.cache/trellis}/istiod-<version>/pilot-discovery.
set -euo pipefail
source "$(dirname "$0")/istio-module.sh"

binary="$(istio_binary istiod TRELLIS_PILOT_DISCOVERY pilot-discovery)"
if [[ "${1:-}" != "--where" && ! -x "$binary" ]]; then
  istio_build istiod "$binary" pilot/cmd/pilot-discovery
fi
echo "$binary"
