#!/usr/bin/env bash
# The data-plane benchmark in one command: direct vs trellis-proxy vs Envoy,
# side by side, on loopback, with mTLS between the sidecars (certificates
# made by the benchmark). Builds the dist binaries, installs Envoy and
# oha if missing (bench/setup.sh), runs every scenario (bench-data-plane),
# writes bench/out/data-plane.{md,json} and the results into
# docs/benchmarks.md. The sidecar is linked as every build of it is: its
# hot functions together (crates/cli/trellis-proxy-hot.ld, which
# bench/link-order.sh --bin trellis-proxy refreshes from a profile).
#
#   bench/run.sh                 the full run (about 14 minutes after the build)
#   bench/run.sh --plaintext     the same without mTLS between the sidecars (both pairs)
#   bench/run.sh --quick         a smoke run: half a second per scenario, docs untouched
#   bench/run.sh --bin-dir DIR   use the binaries in DIR (e.g. target/debug), no build
#   bench/run.sh --rounds 5 ...  other flags go to bench-data-plane (see its --help)
#   bench/run.sh --only soak --soak-secs 60
#                                the soak alone: HTTP/2 at 20 × 50 streams (h2load),
#                                peak RSS and RSS/sockets 30 s after (--soak-rest-secs)
#   bench/run.sh --only telemetry
#                                telemetry's cost alone (issue 17): each pair with
#                                tracing at 1 % and access logs on against off,
#                                added latency and requests per proxy core
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
only=0
bin_dir=""
args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) quick=1; args+=("$1") ;;
    # Some scenarios only: their figures go to bench/out, not into the docs' table.
    --only|--only=*) only=1; args+=("$1") ;;
    --bin-dir) bin_dir="$2"; shift ;;
    # This header, then bench-data-plane's own flags, without building.
    -h|--help)
      sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
      echo
      bench_data_plane="$(ls -t target/{dist,release,debug}/bench-data-plane 2>/dev/null | head -1)"
      if [[ -n "$bench_data_plane" ]]; then
        "$bench_data_plane" --help
      else
        echo "(bench-data-plane's flags: build it, e.g. cargo build --profile dist -p bench)"
      fi
      exit 0 ;;
    *) args+=("$1") ;;
  esac
  shift
done

tools="$(bench/setup.sh)"
if [[ -z "$bin_dir" ]]; then
  echo "run: building dist binaries (trellis-proxy, bench-data-plane)" >&2
  cargo build --profile dist --quiet -p cli --bin trellis-proxy -p bench --bin bench-data-plane
  bin_dir=target/dist
fi

envoy="$(sed -n 's/^ENVOY=//p' <<<"$tools")"
oha="$(sed -n 's/^OHA=//p' <<<"$tools")"

doc=()
if [[ $quick == 0 && $only == 0 ]]; then
  doc=(--doc docs/benchmarks.md)
fi
exec "$bin_dir/bench-data-plane" \
  --proxy "$bin_dir/trellis-proxy" --envoy "$envoy" --oha "$oha" \
  "${doc[@]}" "${args[@]}"
