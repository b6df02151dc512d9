#!/usr/bin/env bash
# Builds the container images of trellisd, trellis-proxy and trellis from
# manifests/images/*.Containerfile, named as the manifests expect them:
# <hub>/<binary>:<tag>, the install's values.global.hub and .tag
# (default localhost/trellis and the workspace version, as the default profile).
#
#   scripts/images.sh [--hub HUB] [--tag TAG] [--push]
#
# Needs podman or docker with a running engine; without one it says so and
# exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."

hub=localhost/trellis
tag="$(awk -F'"' '/^\[workspace.package\]/{p=1} p && /^version/{print $2; exit}' Cargo.toml)"
push=false
while [[ $# -gt 0 ]]; do
  case "$1" in
    --hub) hub="$2"; shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    --push) push=true; shift ;;
    *) echo "images.sh: unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done

engine=""
for candidate in podman docker; do
  if command -v "$candidate" >/dev/null 2>&1 && "$candidate" info >/dev/null 2>&1; then
    engine="$candidate"
    break
  fi
done
if [[ -z "$engine" ]]; then
  found="$(for c in podman docker; do command -v "$c" >/dev/null 2>&1 && printf '%s ' "$c"; done)"
  if [[ -n "$found" ]]; then
    echo "images.sh: ${found% } is installed but its engine is not running (\`${found%% *} info\` fails); start it and run this again" >&2
  else
    echo "images.sh: neither podman nor docker is installed; install one to build the images" >&2
  fi
  exit 1
fi

builder="$hub/builder:$tag"
echo "images.sh: building with $engine: $builder" >&2
"$engine" build -f manifests/images/builder.Containerfile -t "$builder" .
for binary in trellisd trellis-proxy trellis; do
  image="$hub/$binary:$tag"
  echo "images.sh: $image" >&2
  "$engine" build -f "manifests/images/$binary.Containerfile" --build-arg "BUILDER=$builder" -t "$image" .
  if $push; then "$engine" push "$image"; fi
done
echo "images.sh: built $hub/{trellisd,trellis-proxy,trellis}:$tag" >&2
