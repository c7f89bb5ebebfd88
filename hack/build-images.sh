#!/usr/bin/env bash
# Build the operator and trainer images (`make images`): with docker when a Docker engine
# answers, else with buildah (chroot isolation, no daemon). docs/images.md explains the options.
#
#   BASE=registry  (default) the registry bases of the Dockerfiles: the release images.
#   BASE=local     a Debian bookworm base (python3, venv, CA certificates) built here from Debian
#                  packages with mmdebstrap, for machines that cannot pull from a registry.
#   TRAINER=cuda   (default) the release trainer (CUDA, ops compiled); TRAINER=cpu the CPU build
#                  of the same layout that the e2e tests run (trainer/Dockerfile says what it
#                  does not exercise).
#   TAG=dev        tag of kubetune/operator and kubetune/trainer.
#
# `--test` builds what the e2e tests run (BASE=local TRAINER=cpu), tagged with a hash of their
# inputs, into one OCI image layout, ~/.cache/kubetune/images/oci (with docker: archives beside
# it): an image that is there is reused, so a warm run builds nothing, and images share the blobs
# of their common layers, so a code change adds (and the node imports) its small top layer only.
# It prints one line per image: NAME REF SOURCE (the layout folder, or the archive).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
BASE="${BASE:-registry}"
TRAINER="${TRAINER:-cuda}"
TAG="${TAG:-dev}"
CACHE="${KUBETUNE_IMAGE_CACHE:-$HOME/.cache/kubetune/images}"
PY="${KUBETUNE_VENV:-$HOME/.cache/kubetune/venv}/bin/python"
TEST=0
[ "${1:-}" = "--test" ] && { TEST=1; BASE=local; TRAINER=cpu; shift; }
WHAT="${1:-all}"
# The local base: Debian's python3 (3.11 in bookworm), as the registry base has Python 3.11.
BASE_PACKAGES="python3,python3-venv,ca-certificates"
BASE_SUITE=bookworm

log() { echo "[build-images] $*" >&2; }

# One build at a time per machine: parallel builds of the same steps each redo them (the
# layer cache only helps the next build) and each writes its multi-GB layers.
mkdir -p "$(dirname "$CACHE")"
exec 9>"$CACHE.build.lock"
flock -n 9 || { log "waiting for another image build on this machine"; flock 9; }

if docker info >/dev/null 2>&1; then ENGINE=docker; else ENGINE=buildah; fi

have_image() { # ref
  if [ "$ENGINE" = docker ]; then docker image inspect "$1" >/dev/null 2>&1
  else buildah inspect --type image "$1" >/dev/null 2>&1; fi
}

# The build secret `ca` (trainer/Dockerfile): the CA bundle pip should trust, where a
# TLS-inspecting proxy stands between this machine and PyPI (BUILD_CA_BUNDLE, else PIP_CERT);
# an empty file otherwise.
CA_BUNDLE="${BUILD_CA_BUNDLE:-${PIP_CERT:-}}"
CA_SECRET="$(mktemp)"
trap 'rm -f "$CA_SECRET"' EXIT
if [ -n "$CA_BUNDLE" ] && [ -f "$CA_BUNDLE" ]; then cp "$CA_BUNDLE" "$CA_SECRET"; fi

build() { # ref dockerfile [extra args...]
  local ref="$1" file="$2"; shift 2
  log "$ENGINE build $ref ($file $*)"
  if [ "$ENGINE" = docker ]; then
    docker build --secret "id=ca,src=$CA_SECRET" -f "$file" -t "$ref" "$@" .
  else
    # --force-rm: a failed build leaves no working container (its writable layer can be GBs).
    buildah bud --isolation chroot --layers --force-rm --secret "id=ca,src=$CA_SECRET" -f "$file" -t "$ref" "$@" .
  fi
}

save() { # ref archive (docker)
  log "saving $1 to $2"
  mkdir -p "$(dirname "$2")"
  rm -f "$2.tmp"
  docker save -o "$2.tmp" "$1"
  mv "$2.tmp" "$2"
}

local_base() { # prints the ref of the Debian base, building it when missing
  local ref="localhost/kubetune/debian-python:$BASE_SUITE-$(echo "$BASE_PACKAGES" | sha256sum | cut -c1-8)"
  if ! have_image "$ref"; then
    log "mmdebstrap $BASE_SUITE with $BASE_PACKAGES -> $ref"
    local tmp
    tmp="$(mktemp -d)"
    mmdebstrap --quiet --variant=minbase --include="$BASE_PACKAGES" \
      --aptopt='Acquire::Languages "none"' \
      --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
      --dpkgopt='path-exclude=/usr/share/locale/*' \
      "$BASE_SUITE" "$tmp/rootfs.tar" >&2
    if [ "$ENGINE" = docker ]; then
      docker import --change 'CMD ["python3"]' "$tmp/rootfs.tar" "$ref" >/dev/null
    else
      local c
      c="$(buildah from scratch)"
      buildah add --quiet "$c" "$tmp/rootfs.tar" / >/dev/null
      buildah config --cmd python3 --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$c"
      buildah commit --quiet --rm "$c" "$ref" >/dev/null
    fi
    rm -rf "$tmp"
  fi
  echo "$ref"
}

inputs_hash() { # files and folders whose content goes into an image
  { for p in "$@"; do
      find "$p" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 | sort -z | xargs -0 sha256sum
    done; } | sha256sum | cut -c1-16
}

OP_ARGS=() TR_ARGS=()
if [ "$BASE" = local ]; then
  base="$(local_base)"
  OP_ARGS+=(--build-arg "PYTHON_IMAGE=$base")
  TR_ARGS+=(--build-arg "CPU_IMAGE=$base")
fi
if [ "$TRAINER" = cpu ]; then
  "$PY" hack/stage-torch-cpu.py build/images/torch-cpu
  TR_ARGS+=(--target cpu)
fi

if [ "$TEST" = 0 ]; then
  case "$WHAT" in operator|all) build "kubetune/operator:$TAG" operator/Dockerfile "${OP_ARGS[@]}" ;; esac
  case "$WHAT" in trainer|all) build "kubetune/trainer:$TAG" trainer/Dockerfile "${TR_ARGS[@]}" ;; esac
  exit 0
fi

common="$(inputs_hash pyproject.toml README.md operator trainer hack/build-images.sh .dockerignore)"
LAYOUT="$CACHE/oci"
for name in operator trainer; do
  case "$WHAT" in "$name"|all) ;; *) continue ;; esac
  if [ "$name" = operator ]; then args=("${OP_ARGS[@]}"); extra="$base"
  else args=("${TR_ARGS[@]}"); extra="$base $(cat build/images/torch-cpu/.staged)"; fi
  hash="$(echo "$common $extra" | sha256sum | cut -c1-12)"
  ref="localhost/kubetune/$name:test-$hash"
  if [ "$ENGINE" = docker ]; then
    archive="$CACHE/$name-$hash.tar"
    if [ ! -f "$archive" ]; then
      build "$ref" "$name/Dockerfile" "${args[@]}" >&2
      save "$ref" "$archive"
    fi
    echo "$name $ref $archive"
  else
    mkdir -p "$LAYOUT"
    if ! "$PY" hack/oci-layout.py has "$LAYOUT" "$ref"; then
      build "$ref" "$name/Dockerfile" "${args[@]}" >&2
      log "pushing $ref to $LAYOUT (the layers it lacks)"
      # One writer at a time: the layout's index is shared by every checkout of this machine.
      flock "$LAYOUT.lock" bash -c '
        buildah push --quiet --disable-compression "$1" "oci:$2:$1" >/dev/null &&
        "$3" hack/oci-layout.py prune "$2" "$1" 3' _ "$ref" "$LAYOUT" "$PY"
      # The tagged image is the layer cache of the next build: `buildah rmi` of an image also
      # removes its untagged parents, the cached steps. Older test tags go (their own layers).
      buildah images --format '{{.Name}}:{{.Tag}}' --filter "reference=localhost/kubetune/$name" |
        grep -v -x -F "$ref" | grep ':test-' | xargs -r buildah rmi >/dev/null 2>&1 || true
    fi
    echo "$name $ref $LAYOUT"
  fi
  find "$CACHE" -maxdepth 1 -name "$name-*.tar" -mtime +7 -delete
done
