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
# mTLS pair, the 1,000-service config); every function it executed, by its
# symbol name in this very binary, goes to bench/out/link-order.txt, in
# name order; then the proxy is linked again with that list. A function
# the profile did not see stays where the linker puts it.
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

sed -n 's/^fn=//p' "$work"/callgrind.* | sort -u >"$work/executed.txt"
nm --defined-only "$bin" | awk '$2 ~ /^[tTwW]$/ {print $3}' | sort -u >"$work/symbols.txt"
comm -12 "$work/executed.txt" "$work/symbols.txt" >"$work/order.txt"
# Rewritten only when it changed: cargo relinks when the file is newer.
cmp -s "$work/order.txt" "$order" || mv "$work/order.txt" "$order"
echo "link-order: $(wc -l <"$order") functions executed; linking trellis-proxy by them" >&2
TRELLIS_PROXY_LINK_ORDER="$order" cargo build --profile dist --quiet -p cli --bin trellis-proxy
