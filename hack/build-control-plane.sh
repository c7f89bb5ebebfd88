#!/usr/bin/env bash
# Build a real Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler), kubectl, kwok and helm from the Go module proxy, once per machine.
#
# Binaries land in $KUBETUNE_BIN_DIR (default ~/.cache/kubetune/bin/k8s-$K8S_VERSION) and are
# reused when present, so only the first run on a machine pays for the build.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.34.4}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
KWOK_VERSION="${KWOK_VERSION:-v0.8.0}"
HELM_VERSION="${HELM_VERSION:-v3.19.0}"
BIN_DIR="${KUBETUNE_BIN_DIR:-$HOME/.cache/kubetune/bin/k8s-$K8S_VERSION}"
WORK="${KUBETUNE_BUILD_DIR:-$HOME/.cache/kubetune/build}"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
export PATH="/usr/local/go/bin:$PATH"

if [ "${1:-}" = "--print-dir" ]; then echo "$BIN_DIR"; exit 0; fi
mkdir -p "$BIN_DIR" "$WORK"

log() { echo "[build-control-plane] $*" >&2; }

build_kubernetes() {
  local need=()
  for b in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    [ -x "$BIN_DIR/$b" ] || need+=("$b")
  done
  [ ${#need[@]} -eq 0 ] && return 0
  log "building ${need[*]} $K8S_VERSION (first run on this machine: tens of minutes)"
  local dir="$WORK/kubernetes-$K8S_VERSION"
  mkdir -p "$dir"
  cd "$dir"
  [ -f go.mod ] || go mod init kubetune.local/k8sbuild >/dev/null 2>&1
  local gomod
  gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  local minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  {
    echo "module kubetune.local/k8sbuild"
    echo
    grep -E '^go [0-9]' "$gomod" | head -1
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    # Every staging module of this release, pinned to its published v0.Y.Z twin.
    grep -oE 'k8s.io/[a-z0-9-]+ => ./staging/src/k8s.io/[a-z0-9-]+' "$gomod" |
      awk -v v="v0.${minor}.${K8S_VERSION##*.}" '{print "replace " $1 " => " $1 " " v}'
  } > go.mod
  cat > tools.go <<'GO'
//go:build tools

package k8sbuild

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  go mod tidy -e >/dev/null 2>&1 || true
  go get "k8s.io/kubernetes@$K8S_VERSION"
  local pkg="k8s.io/component-base/version" cpkg="k8s.io/client-go/pkg/version"
  local major=1
  local ld="-s -w -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ld="$ld -X $cpkg.gitVersion=$K8S_VERSION -X $cpkg.gitMajor=$major -X $cpkg.gitMinor=$minor"
  for b in "${need[@]}"; do
    log "go build $b"
    go build -trimpath -ldflags "$ld" -o "$BIN_DIR/$b.tmp" "k8s.io/kubernetes/cmd/$b"
    mv "$BIN_DIR/$b.tmp" "$BIN_DIR/$b"
  done
}

build_simple() { # name module-main version module-root ldflags
  local name="$1" pkg="$2" version="$3" root="$4" ld="${5:-}"
  [ -x "$BIN_DIR/$name" ] && return 0
  log "building $name $version"
  local dir="$WORK/$name-$version"
  mkdir -p "$dir"
  cd "$dir"
  [ -f go.mod ] || go mod init "kubetune.local/$name" >/dev/null 2>&1
  go get "$root@$version"
  go build -trimpath -ldflags "-s -w $ld" -o "$BIN_DIR/$name.tmp" "$pkg"
  mv "$BIN_DIR/$name.tmp" "$BIN_DIR/$name"
}

# helm's `helm template` (no cluster) checks a chart's kubeVersion against the Kubernetes version
# compiled into it: v1.20 unless set by ldflags, as helm's own Makefile does from the client-go
# it is built with. A helm in the cache without that is rebuilt; the stamp says which recipe
# built the one there (bump HELM_RECIPE when the flags change).
HELM_RECIPE="k8s-version-ldflags-1"

build_helm() {
  local stamp="$BIN_DIR/.helm.stamp" want="helm $HELM_VERSION $HELM_RECIPE"
  if [ -x "$BIN_DIR/helm" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then return 0; fi
  log "building helm $HELM_VERSION"
  local dir="$WORK/helm-$HELM_VERSION"
  mkdir -p "$dir"
  cd "$dir"
  [ -f go.mod ] || go mod init kubetune.local/helm >/dev/null 2>&1
  go get "helm.sh/helm/v3@$HELM_VERSION"
  # client-go v0.Y.Z is Kubernetes v1.Y (helm's Makefile: K8S_MODULES_MAJOR_VER/MINOR_VER).
  local cg major minor
  cg=$(go list -m -f '{{.Version}}' k8s.io/client-go)
  cg="${cg#v}"
  major=$(( ${cg%%.*} + 1 ))
  minor="${cg#*.}"; minor="${minor%%.*}"
  local ld="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  local pkg
  for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
    ld="$ld -X $pkg.k8sVersionMajor=$major -X $pkg.k8sVersionMinor=$minor"
  done
  # Built beside the old one and renamed over it: a helm that other processes are running
  # is never deleted or half-written.
  local tmp
  tmp=$(mktemp "$BIN_DIR/.helm.XXXXXX")
  go build -trimpath -ldflags "$ld" -o "$tmp" helm.sh/helm/v3/cmd/helm
  chmod 0755 "$tmp"
  mv -f "$tmp" "$BIN_DIR/helm"
  echo "$want" > "$stamp.tmp"
  mv -f "$stamp.tmp" "$stamp"
  log "helm $HELM_VERSION assumes Kubernetes v$major.$minor without a cluster"
}

main() {
  local what="${1:-all}"
  case "$what" in
    etcd|all) build_simple etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION" go.etcd.io/etcd/server/v3 ;;&
    kubernetes|all) build_kubernetes ;;&
    kwok|all) build_simple kwok sigs.k8s.io/kwok/cmd/kwok "$KWOK_VERSION" sigs.k8s.io/kwok ;;&
    helm|all) build_helm ;;&
    *) ;;
  esac
  echo "$BIN_DIR"
}

# One lock per binary folder: a second caller waits for the first build instead of racing it.
exec 9>"$BIN_DIR/.build.lock"
flock 9
# Called last and followed by exit, so editing this file while a build runs cannot break it.
main "$@"
exit $?
