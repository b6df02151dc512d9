#!/usr/bin/env bash
# Relinks the dist-profile trellis-proxy with the functions it executes placed
# together at the start of its code (crates/cli/build.rs reads the list from
# TRELLIS_PROXY_LINK_ORDER).
#
# Why: the kernel maps an executable's pages a whole page-cache folio (up to
# hundreds of KiB) at a time, so hot functions scattered over 6.5 MB of code
# keep two thirds of it resident. Laid out together they keep ~2.5 MB.
#
# How: the built trellis-proxy runs under valgrind's callgrind through the
# benchmark's quick run (start, readiness, HTTP/1.1 and HTTP/2 through the
# mTLS pair, the 1,000-service config) and, when the release trellisd and
# churn benchmark are built, through a short run of bench/proxy-churn.sh (a
# 1,000-service config from trellisd, then endpoint updates: the code a
# proxy runs all day under churn, which the first run never executes);
# every function it executed, by its symbol name in this very binary, goes
# to bench/out/link-order.txt, in name order; then the proxy is linked
# again with that list. A function the profile did not see stays where the
# linker puts it.
#
#   bench/link-order.sh      (bench/run.sh calls it after its release build)
set -euo pipefail
cd "$(dirname "$0")/.."

bin="$PWD/target/dist/trellis-proxy"
order="$PWD/bench/out/link-order.txt"
work="$PWD/bench/out/link-order"
[[ -x "$bin" && -x target/dist/bench-data-plane ]] ||
  { echo "link-order: build the dist binaries first (bench/run.sh does)" >&2; exit 1; }
if ! command -v valgrind >/dev/null; then
  echo "link-order: installing valgrind (apt)" >&2
  apt-get install -y -qq valgrind >/dev/null ||
    { echo "link-order: valgrind is missing and could not be installed" >&2; exit 1; }
fi

tools="$(bench/setup.sh)"
envoy="$(sed -n 's/^ENVOY=//p' <<<"$tools")"
oha="$(sed -n 's/^OHA=//p' <<<"$tools")"

rm -rf "$work"
mkdir -p "$work"
cat >"$work/trellis-proxy" <<WRAPPER
#!/usr/bin/env bash
exec valgrind --tool=callgrind --dump-instr=no --compress-strings=no --demangle=no \\
  --callgrind-out-file="$work/callgrind.%p" "$bin" "\$@"
WRAPPER
chmod +x "$work/trellis-proxy"

echo "link-order: profiling trellis-proxy under callgrind (about a minute)" >&2
target/dist/bench-data-plane --proxy "$work/trellis-proxy" --envoy "$envoy" --oha "$oha" \
  --quick --only memory,latency,h1,h2 --out "$work/bench" >"$work/bench.log" 2>&1 ||
  { echo "link-order: the profiling run failed; see $work/bench.log" >&2; exit 1; }

churn_bins=(target/release/trellisd target/release/bench-control-plane target/release/bench-proxy-churn)
if [[ -x ${churn_bins[0]} && -x ${churn_bins[1]} && -x ${churn_bins[2]} ]]; then
  # The churn benchmark takes every binary from one directory: the profiled
  # proxy's wrapper beside the release trellisd and mesh writer. It ends
  # the proxy with SIGKILL, which would lose the profile: here it kills the
  # wrapper, and the proxy under valgrind gets SIGTERM (its parent's death
  # signal), exits, and callgrind writes the profile.
  mkdir -p "$work/churn"
  cat >"$work/churn/trellis-proxy" <<WRAPPER
#!/usr/bin/env bash
setpriv --pdeathsig TERM valgrind --tool=callgrind --dump-instr=no --compress-strings=no \\
  --demangle=no --callgrind-out-file="$work/callgrind.%p" "$bin" "\$@" &
wait
WRAPPER
  chmod +x "$work/churn/trellis-proxy"
  for b in trellisd bench-control-plane bench-data-plane; do
    ln -sf "$PWD/target/release/$b" "$work/churn/$b"
  done
  echo "link-order: profiling trellis-proxy under endpoint churn (about two minutes)" >&2
  target/release/bench-proxy-churn --bin-dir "$work/churn" --oha "$oha" --secs 10 --load-rate 50 \
    >"$work/churn.log" 2>&1 ||
    { echo "link-order: the churn profiling run failed; see $work/churn.log" >&2; exit 1; }
  # The proxy writes its profile as it exits, after the benchmark is done.
  for _ in $(seq 60); do
    pgrep -f "callgrind-out-file=$work/callgrind" >/dev/null || break
    sleep 1
  done
else
  echo "link-order: no release trellisd/bench-control-plane/bench-proxy-churn: the churn path is not profiled" >&2
fi

sed -n 's/^fn=//p' "$work"/callgrind.* | sort -u >"$work/executed.txt"
nm --defined-only "$bin" | awk '$2 ~ /^[tTwW]$/ {print $3}' | sort -u >"$work/symbols.txt"
comm -12 "$work/executed.txt" "$work/symbols.txt" >"$work/order.txt"
# Rewritten only when it changed: cargo relinks when the file is newer.
cmp -s "$work/order.txt" "$order" || mv "$work/order.txt" "$order"
echo "link-order: $(wc -l <"$order") functions executed; linking trellis-proxy by them" >&2
TRELLIS_PROXY_LINK_ORDER="$order" cargo build --profile dist --quiet -p cli --bin trellis-proxy
