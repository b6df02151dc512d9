#!/usr/bin/env bash
# Writes crates/cli/<binary>-hot.ld for trellis-proxy and trellisd: the
# linker scripts that place the functions a running binary executes together
# at the start of its code. crates/cli/build.rs passes each to every
# optimised link of its binary, so the release build, the dist build and the
# images all get it; they are committed.
#
# Why: the kernel maps an executable's pages a whole page-cache folio (on
# ext4 since Linux 6.16, up to hundreds of KiB) or fault-around window (64
# KiB) at a time, so hot functions scattered over 8-20 MB of code keep most
# of it resident. Laid out together they keep a few MB. The sidecar runs
# once per pod; trellisd's code was a third of its memory at 1,000 proxies.
#
# How: each profiled binary runs under valgrind's callgrind through the
# benchmarks that exercise what it runs all day:
# - trellis-proxy: the data-plane benchmark's quick run (start, readiness,
#   HTTP/1.1 and HTTP/2 through the mTLS pair, the 1,000-service config) and
#   a short run of the churn benchmark (a 1,000-service config from
#   trellisd, then endpoint updates, which the first run never executes);
# - trellisd: the control-plane benchmark with 50 proxies, a 200-service
#   mesh as Pods, as ServiceEntries with a Sidecar per namespace, and on
#   demand (load, index, full push, endpoint and VirtualService changes
#   through its API, each proxy's scope).
# Every function it executed is kept by its symbol name WITHOUT the legacy
# mangling's hash (`17h<16 hex digits>E`) where that names one function,
# with it for generic functions' instances (below). The hash follows cargo's
# -C metadata: it differs between profiles (release, dist), toolchains and
# dependency versions, not between checkouts or the packages a build selects
# (the cli test `hot_code` keeps the manifests so). The script matches each
# name as a glob on its function section (`.text.<name>*`). Profile every
# profile you ship (`--bin-dir` twice, or target/dist built before). A
# function the profile did not see stays where the linker puts it; names
# that match nothing are ignored (the cli test `hot_code` fails when too
# many of them do: the list went stale).
#
#   bench/link-order.sh                  both binaries of target/release (and
#                                        target/dist when built): profile,
#                                        write the scripts, relink
#   bench/link-order.sh --bin NAME       only trellis-proxy or trellisd
#   bench/link-order.sh --bin-dir DIR    profile DIR's binaries (repeatable)
#
# Needs release trellisd, trellis-proxy, bench-control-plane,
# bench-data-plane and bench-proxy-churn (it builds them), valgrind, and
# Envoy and oha for the proxy's (bench/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

work="$PWD/bench/out/link-order"
dirs=() bins=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --bin-dir) dirs+=("$(realpath "$2")"); shift ;;
    --bin)
      case "$2" in
        trellis-proxy|trellisd) bins+=("$2") ;;
        *) echo "link-order: --bin is trellis-proxy or trellisd, not $2" >&2; exit 2 ;;
      esac
      shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "link-order: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[[ ${#bins[@]} -gt 0 ]] || bins=(trellis-proxy trellisd)

echo "link-order: building the release binaries it runs" >&2
cargo build --release --quiet -p cli --bin trellis-proxy --bin trellisd \
  -p bench --bin bench-control-plane --bin bench-data-plane --bin bench-proxy-churn
release="$PWD/target/release"
if [[ ${#dirs[@]} == 0 ]]; then
  dirs=("$release")
  [[ -x target/dist/trellis-proxy && -x target/dist/trellisd ]] && dirs+=("$PWD/target/dist")
fi
if ! command -v valgrind >/dev/null; then
  echo "link-order: installing valgrind (apt)" >&2
  apt-get install -y -qq valgrind >/dev/null ||
    { echo "link-order: valgrind is missing and could not be installed" >&2; exit 1; }
fi
# callgrind_wrapper BIN OUT: a script running BIN under callgrind, its
# profile in OUT's directory. The benchmarks end what they start with
# SIGKILL, which would lose the profile: here they kill the wrapper, and the
# binary under valgrind gets SIGTERM (its parent's death signal), exits
# cleanly, and callgrind writes the profile.
callgrind_wrapper() {
  cat >"$2" <<WRAPPER
#!/usr/bin/env bash
setpriv --pdeathsig TERM valgrind --tool=callgrind --dump-instr=no --compress-strings=no \\
  --demangle=no --callgrind-out-file="$(dirname "$2")/callgrind.%p" "$1" "\$@" &
wait
WRAPPER
  chmod +x "$2"
}

# profile_trellis_proxy BIN RUN: runs BIN through the proxy's benchmarks.
profile_trellis_proxy() {
  local bin="$1" run="$2" tools envoy oha
  tools="$(bench/setup.sh)"
  envoy="$(sed -n 's/^ENVOY=//p' <<<"$tools")"
  oha="$(sed -n 's/^OHA=//p' <<<"$tools")"
  mkdir -p "$run/churn"
  callgrind_wrapper "$bin" "$run/trellis-proxy"
  # The churn benchmark takes every binary from one directory.
  cp "$run/trellis-proxy" "$run/churn/trellis-proxy"
  for b in trellisd bench-control-plane bench-data-plane; do
    ln -sf "$release/$b" "$run/churn/$b"
  done
  echo "link-order: profiling $bin under callgrind (about a minute)" >&2
  "$release/bench-data-plane" --proxy "$run/trellis-proxy" --envoy "$envoy" --oha "$oha" \
    --quick --only memory,latency,h1,h2 --out "$run/bench" >"$run/bench.log" 2>&1 ||
    { echo "link-order: the profiling run failed; see $run/bench.log" >&2; exit 1; }
  echo "link-order: profiling $bin under endpoint churn (about two minutes)" >&2
  "$release/bench-proxy-churn" --bin-dir "$run/churn" --oha "$oha" --secs 10 --load-rate 50 \
    >"$run/churn.log" 2>&1 ||
    { echo "link-order: the churn profiling run failed; see $run/churn.log" >&2; exit 1; }
}

# profile_trellisd BIN RUN: runs BIN through the control-plane benchmark.
profile_trellisd() {
  local bin="$1" run="$2" n=0 scenario
  callgrind_wrapper "$bin" "$run/trellisd"
  for scenario in "--format pods --changes 5 --vs-changes 2" \
    "--format service-entries --sidecars --changes 5 --vs-changes 2" \
    "--format service-entries --on-demand 20 --changes 0 --vs-changes 0"; do
    n=$((n + 1))
    echo "link-order: profiling $bin under callgrind: bench-control-plane $scenario" >&2
    # shellcheck disable=SC2086 # the scenario's words are arguments
    "$release/bench-control-plane" --trellisd "$run/trellisd" --services 200 --proxies 50 $scenario \
      >"$run/control-plane-$n.log" 2>&1 ||
      { echo "link-order: the profiling run failed; see $run/control-plane-$n.log" >&2; exit 1; }
  done
}

for name in "${bins[@]}"; do
  script="$PWD/crates/cli/$name-hot.ld"
  rm -rf "${work:?}/$name"
  mkdir -p "$work/$name"
  : >"$work/$name/executed.txt"
  n=0
  for dir in "${dirs[@]}"; do
    n=$((n + 1))
    bin="$dir/$name"
    run="$work/$name/$n"
    mkdir -p "$run"
    [[ -x "$bin" ]] || { echo "link-order: no $bin" >&2; exit 1; }
    "profile_${name//-/_}" "$bin" "$run"
    # The binary writes its profile as it exits, after the benchmark is done.
    for _ in $(seq 60); do
      pgrep -f "callgrind-out-file=$run/callgrind" >/dev/null || break
      sleep 1
    done

    # Executed (callgrind's `'N` marks a recursion depth) and defined in this
    # binary (not libc's, not the loader's).
    sed -n "/^fn=/{s/^fn=//; s/'[0-9]*\$//; p}" "$run"/callgrind.* | sort -u >"$run/executed.txt"
    nm --defined-only "$bin" | awk '$2 ~ /^[tTwW]$/ {print $3}' | sort -u >"$run/symbols.txt"
    comm -12 "$run/executed.txt" "$run/symbols.txt" >>"$work/$name/executed.txt"
    echo "link-order: $(comm -12 "$run/executed.txt" "$run/symbols.txt" | wc -l) functions executed in $bin" >&2
  done

  # A legacy-mangled name (`..17h<hash>E`, then `.llvm.<n>` when LLVM
  # promoted a local symbol, which changes with the code) is matched without
  # its hash when that names one function in every binary profiled: then it
  # names the same function in any build. Generic functions' legacy names
  # leave out the type parameters, so `Vec<T>::push` names hundreds of
  # functions, most of them never run; those are kept with the hash
  # (`..17h<hash>E*`): the instance this build runs, in this profile, until
  # a version, toolchain or dependency change renames it (a build at another
  # path, or of other packages, names it the same). Other names (std's v0
  # names) stay whole.
  hashless='s/(17h)[0-9a-f]{16}E(\..*)?$/\1*/'
  for run in "$work/$name"/*/; do
    sed -E "$hashless" "$run/symbols.txt" | sort | uniq -d
  done | sort -u >"$work/$name/shared.txt"
  # Each executed name, its hash-less form, its form with the hash (legacy
  # names; another name is matched with whatever LLVM appended to it, thrice).
  sort -u "$work/$name/executed.txt" |
    sed -E 's/^(.*17h)([0-9a-f]{16}E)(\..*)?$/\1\2\3 \1* \1\2*/; t
            s/\.(llvm\.)?[0-9]+$//; s/^.*$/&* &* &*/' |
    awk -v shared="$work/$name/shared.txt" '
      BEGIN { while ((getline name <shared) > 0) many[name] = 1 }
      { print ($2 in many) ? $3 : $2 }' |
    # Only the characters the linker script reads as one name (legacy
    # mangling escapes every other character).
    grep -E '^[A-Za-z0-9_.$]+\*?$' | sort -u >"$work/$name/names.txt"
  {
    echo "/* The functions $name executes, placed together at the start of its"
    echo " * code. Written by bench/link-order.sh from a profile (do not edit); read"
    echo " * by crates/cli/build.rs. A name ending \"17h*\" matches that function in"
    echo " * any build; one with its hash, the instance the profiled builds ran. */"
    echo "SECTIONS {"
    # One input-section description for all names: lld matches each section
    # against its patterns in one pass (a description per name: 10× slower).
    echo "  .text.hot : { *("
    sed 's/^.*$/    .text.&/' "$work/$name/names.txt"
    echo "  ) }"
    echo "} INSERT BEFORE .text;"
  } >"$work/$name/hot.ld"
  # Rewritten only when it changed: cargo relinks when the file is newer.
  cmp -s "$work/$name/hot.ld" "$script" || cp "$work/$name/hot.ld" "$script"
  echo "link-order: $(wc -l <"$work/$name/names.txt") names ($(grep -c '17h\*$' "$work/$name/names.txt") without their hash) in ${script#"$PWD"/}" >&2
done

echo "link-order: relinking ${bins[*]}" >&2
for dir in "${dirs[@]}"; do
  case "$dir" in
    "$PWD/target/release") profile=(--release) ;;
    "$PWD/target/dist") profile=(--profile dist) ;;
    *) continue ;;
  esac
  cargo build "${profile[@]}" --quiet -p cli $(printf -- '--bin %s ' "${bins[@]}")
done
