#!/usr/bin/env bash
# One proxy under endpoint churn (issue 20, the proxy side): a release
# trellis-proxy holding a 1,000-service mesh's config from a real trellisd,
# a fixed-rate load through it to an upstream on loopback, first with the
# mesh still, then with 100 endpoint changes per second applied to trellisd.
# Prints the proxy's RSS, CPU, p50/p99 and the updates it applied.
#
#   bench/proxy-churn.sh                   build (release) and run: 2 × 60 s
#   bench/proxy-churn.sh --bin-dir DIR     use the binaries in DIR, no build
#   bench/proxy-churn.sh --secs 20 ...     other flags go to bench-proxy-churn (--help)
#   bench/proxy-churn.sh --trellisd-cpus 0 --proxy-cpus 1
#                                          trellisd on its own core (in a mesh it runs elsewhere)
#   bench/proxy-churn.sh --page-cache read the proxy binary read whole before it starts
#                                          (default cold: dropped from the page cache; its
#                                          RSS depends on it, docs/benchmarks.md "h-pmem")
set -euo pipefail
cd "$(dirname "$0")/.."

bin_dir=""
args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --bin-dir) bin_dir="$2"; shift ;;
    # Help without a build: this header, then the benchmark's flags if built.
    -h|--help)
      sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
      help_bin="${bin_dir:-target/release}/bench-proxy-churn"
      if [[ -x "$help_bin" ]]; then
        echo; "$help_bin" --help
      else
        echo; echo "($help_bin is not built: its flags are listed once it is)"
      fi
      exit 0 ;;
    *) args+=("$1") ;;
  esac
  shift
done

if [[ -z "$bin_dir" ]]; then
  echo "proxy-churn: building release binaries" >&2
  cargo build --release --quiet -p cli --bin trellis-proxy --bin trellisd \
    -p bench --bin bench-control-plane --bin bench-data-plane --bin bench-proxy-churn
  bin_dir=target/release
fi
oha="$(command -v oha || echo "$HOME/.cargo/bin/oha")"
mkdir -p bench/out
exec "$bin_dir/bench-proxy-churn" --bin-dir "$bin_dir" --oha "$oha" \
  --json bench/out/proxy-churn.json "${args[@]}"
