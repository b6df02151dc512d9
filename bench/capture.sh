#!/usr/bin/env bash
# Capture against the explicit proxy, side by side in one run (issue 14:
# capture must not cost the sidecar pair more than 10 % of its added latency
# or throughput). Makes a network namespace owned by this script, with
# loopback, a route to the service VIPs and the capture rules
# of `trellis-proxy iptables`, and runs `bench-data-plane --capture` in it:
# direct, the Trellis pair as explicit proxy, the same pair reached by
# capture. Nothing outside the namespace is changed; it is removed on exit.
# Needs root. Results: bench/out/capture.{md,json}.
#
#   bench/capture.sh --bin-dir target/release            (no build)
#   bench/capture.sh --bin-dir target/debug --quick      a smoke run
#   other flags go to bench-data-plane (--rounds, --rate, --plaintext, ...)
set -euo pipefail
cd "$(dirname "$0")/.."

bin_dir=""
args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --bin-dir) bin_dir="$2"; shift ;;
    *) args+=("$1") ;;
  esac
  shift
done
if [[ -z "$bin_dir" ]]; then
  echo "capture: building release binaries (trellis-proxy, bench-data-plane)" >&2
  cargo build --release --quiet -p cli --bin trellis-proxy -p bench --bin bench-data-plane
  bin_dir=target/release
fi
oha="$(bench/setup.sh | sed -n 's/^OHA=//p')"
bin_dir="$(realpath "$bin_dir")"

ns=trellis-bench-capture
in_ns() { ip netns exec "$ns" "$@"; }
ip netns del "$ns" 2>/dev/null || true  # a crashed run's
ip netns add "$ns"
trap 'ip netns del "$ns"' EXIT
in_ns ip link set lo up
# The VIPs must be routable for a connect to reach the NAT rules at all:
# a link with their range (a veth pair, both ends here; the dummy driver is
# not on every kernel).
in_ns ip link add trellis-vip0 type veth peer name trellis-vip1
in_ns ip addr add 10.96.255.254/16 dev trellis-vip0
in_ns ip link set trellis-vip1 up
in_ns ip link set trellis-vip0 up
in_ns "$bin_dir/trellis-proxy" iptables
in_ns "$bin_dir/bench-data-plane" --capture \
  --proxy "$bin_dir/trellis-proxy" --oha "$oha" --h2-app builtin "${args[@]}"
