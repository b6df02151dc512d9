# Sourced by scripts/istioctl.sh and scripts/istiod.sh: the one Istio pin
# both build from, the cache they build into, and the build itself. Both
# binaries must come from the same Istio (istioctl is the oracle of the
# differential tests, pilot-discovery the other side of the control-plane
# benchmark).
#
#   istio_binary NAME ENVVAR FILE  the cached binary's path: $ENVVAR if set,
#                                  else <cache>/NAME-<version>/FILE
#   istio_build TAG BINARY PKG     go-install PKG (a package path inside
#                                  istio.io/istio) at the pin into BINARY
#   istio_module_dir               the module's source directory in Go's
#                                  module cache (fetched if need be)

# istio.io/istio publishes no tagged Go module versions; this pseudo-version
# is the Istio master the module proxy serves (API istio.io/api v1.31).
istio_version="v0.0.0-20260827124520-eed52ebb66ad"
istio_cache="${TRELLIS_TOOLS_CACHE:-$HOME/.cache/trellis}"

istio_binary() {
  local name="$1" envvar="$2" file="$3"
  echo "${!envvar:-$istio_cache/$name-$istio_version/$file}"
}

# The build is large (many minutes on two cores), so it runs at low priority.
istio_build() {
  local tag="$1" binary="$2" pkg="$3"
  command -v go >/dev/null || { echo "$tag: go is not installed" >&2; return 1; }
  local dir start scratch
  dir="$(dirname "$binary")"
  mkdir -p "$dir"
  start=$(date +%s)
  echo "$tag: building istio.io/istio/$pkg@$istio_version into $dir" >&2
  # Built into a scratch directory and renamed into place, so an interrupted
  # build never leaves a binary that looks done. `go install pkg@version`
  # builds outside any module: the repository's files stay as they are.
  scratch="$(mktemp -d "$dir/.build.XXXXXX")"
  # shellcheck disable=SC2064 # the path is fixed now, on purpose
  trap "rm -rf '$scratch'" EXIT
  (cd / && CGO_ENABLED=0 GOBIN="$scratch" nice -n 10 \
    go install -trimpath -ldflags "-s -w" "istio.io/istio/$pkg@$istio_version")
  mv "$scratch/$(basename "$pkg")" "$binary"
  echo "$tag: built in $(( $(date +%s) - start ))s" >&2
}

istio_module_dir() {
  command -v go >/dev/null || { echo "istio: go is not installed" >&2; return 1; }
  (cd / && go mod download -json "istio.io/istio@$istio_version") \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p'
}
