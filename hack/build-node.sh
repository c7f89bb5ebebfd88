#!/usr/bin/env bash
# Build what a real test node runs beside the control plane, from the Go module proxy, once per
# machine: kubelet (same release as the control plane), containerd v2 with its runc shim and
# ctr, crictl, the pods' sandbox process (hack/node/pause.go), CoreDNS (headless-Service names for the pods) and MinIO (the S3 server the
# trainer pods write checkpoints to). runc and the CNI plugins come from Debian packages
# (hack/install-node-packages.sh).
#
# Binaries land in $KUBETUNE_NODE_BIN_DIR (default ~/.cache/kubetune/bin/node-$K8S_VERSION)
# beside a .<name>.version stamp each; a binary is rebuilt only when its version changes.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.34.4}"
CONTAINERD_VERSION="${CONTAINERD_VERSION:-v2.2.9}"
CRICTL_VERSION="${CRICTL_VERSION:-v1.34.0}"
COREDNS_VERSION="${COREDNS_VERSION:-v1.14.7}"
# MinIO publishes no semantic-version tags: this is the module proxy's version of one commit.
MINIO_VERSION="${MINIO_VERSION:-v0.0.0-20260212201848-7aac2a2c5b7c}"
HERE="$(cd "$(dirname "$0")" && pwd)"
BIN_DIR="${KUBETUNE_NODE_BIN_DIR:-$HOME/.cache/kubetune/bin/node-$K8S_VERSION}"
WORK="${KUBETUNE_BUILD_DIR:-$HOME/.cache/kubetune/build}"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
export PATH="/usr/local/go/bin:$PATH"

if [ "${1:-}" = "--print-dir" ]; then echo "$BIN_DIR"; exit 0; fi
mkdir -p "$BIN_DIR" "$WORK"

log() { echo "[build-node] $*" >&2; }

fresh() { # name version: the binary is there and was built at this version
  [ -x "$BIN_DIR/$1" ] && [ "$(cat "$BIN_DIR/.$1.version" 2>/dev/null)" = "$2" ]
}

install_bin() { # name version built-file
  mv "$3" "$BIN_DIR/$1"
  echo "$2" > "$BIN_DIR/.$1.version"
}

module_dir() { # name version root: a scratch module requiring root@version
  local dir="$WORK/$1-$2"
  mkdir -p "$dir"
  cd "$dir"
  [ -f go.mod ] || go mod init "kubetune.local/$1" >/dev/null 2>&1
  go get "$3@$2" >/dev/null 2>&1 || go get "$3@$2"
}

build_kubelet() {
  fresh kubelet "$K8S_VERSION" && return 0
  log "building kubelet $K8S_VERSION"
  local dir="$WORK/kubelet-$K8S_VERSION"
  mkdir -p "$dir"
  cd "$dir"
  [ -f go.mod ] || go mod init kubetune.local/kubelet >/dev/null 2>&1
  local gomod minor="${K8S_VERSION#v1.}"
  minor="${minor%%.*}"
  gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  {
    echo "module kubetune.local/kubelet"
    echo
    grep -E '^go [0-9]' "$gomod" | head -1
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    # k8s.io/kubernetes points its staging modules at ./staging: pin each to its published twin.
    grep -oE 'k8s.io/[a-z0-9-]+ => ./staging/src/k8s.io/[a-z0-9-]+' "$gomod" |
      awk -v v="v0.${minor}.${K8S_VERSION##*.}" '{print "replace " $1 " => " $1 " " v}'
  } > go.mod
  go get "k8s.io/kubernetes@$K8S_VERSION" >/dev/null 2>&1 || go get "k8s.io/kubernetes@$K8S_VERSION"
  local pkg="k8s.io/component-base/version"
  local ld="-s -w -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  go build -trimpath -ldflags "$ld" -o "$BIN_DIR/kubelet.tmp" k8s.io/kubernetes/cmd/kubelet
  install_bin kubelet "$K8S_VERSION" "$BIN_DIR/kubelet.tmp"
}

build_containerd() {
  local root=github.com/containerd/containerd/v2
  fresh containerd "$CONTAINERD_VERSION" && fresh containerd-shim-runc-v2 "$CONTAINERD_VERSION" &&
    fresh ctr "$CONTAINERD_VERSION" && return 0
  log "building containerd $CONTAINERD_VERSION (containerd, containerd-shim-runc-v2, ctr)"
  module_dir containerd "$CONTAINERD_VERSION" "$root"
  local ld="-s -w -X $root/version.Version=$CONTAINERD_VERSION"
  # No btrfs, devmapper or zfs snapshotters (they need C libraries): the node uses overlayfs.
  local tags="no_btrfs,no_devmapper,no_zfs"
  for b in containerd containerd-shim-runc-v2 ctr; do
    go build -trimpath -tags "$tags" -ldflags "$ld" -o "$BIN_DIR/$b.tmp" "$root/cmd/$b"
    install_bin "$b" "$CONTAINERD_VERSION" "$BIN_DIR/$b.tmp"
  done
}

build_simple() { # name version module-root main-package [ldflags]
  local name="$1" version="$2" root="$3" pkg="$4" ld="${5:-}"
  fresh "$name" "$version" && return 0
  log "building $name $version"
  module_dir "$name" "$version" "$root"
  go build -trimpath -ldflags "-s -w $ld" -o "$BIN_DIR/$name.tmp" "$pkg"
  install_bin "$name" "$version" "$BIN_DIR/$name.tmp"
}

build_pause() {
  local version
  version="go-$(sha256sum "$HERE/node/pause.go" | cut -c1-12)"
  fresh pause "$version" && return 0
  log "building pause ($version)"
  local dir="$WORK/pause"
  mkdir -p "$dir"
  cp "$HERE/node/pause.go" "$dir/main.go"
  cd "$dir"
  [ -f go.mod ] || go mod init kubetune.local/pause >/dev/null 2>&1
  go build -trimpath -ldflags "-s -w" -o "$BIN_DIR/pause.tmp" .
  install_bin pause "$version" "$BIN_DIR/pause.tmp"
}

main() {
  local what="${1:-all}"
  case "$what" in
    pause|all) build_pause ;;&
    containerd|all) build_containerd ;;&
    crictl|all) build_simple crictl "$CRICTL_VERSION" sigs.k8s.io/cri-tools sigs.k8s.io/cri-tools/cmd/crictl \
      "-X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION" ;;&
    kubelet|all) build_kubelet ;;&
    coredns|all) build_simple coredns "$COREDNS_VERSION" github.com/coredns/coredns github.com/coredns/coredns ;;&
    minio|all) build_simple minio "$MINIO_VERSION" github.com/minio/minio github.com/minio/minio ;;&
    *) ;;
  esac
  echo "$BIN_DIR"
}

# One lock per binary folder: a second caller waits for the first build instead of racing it.
exec 9>"$BIN_DIR/.build.lock"
flock 9
main "$@"
exit $?
