#!/usr/bin/env bash
# Build the queueing and gang-scheduling components kubetune is tested against, from the Go
# module proxy, once per machine: Kueue's manager, the scheduler-plugins scheduler
# (coscheduling) and Volcano's vc-scheduler.
#
# Each is built inside an unpacked copy of its own released module, so its go.mod (replace
# directives included) and go.sum pin exactly what upstream released. Binaries land next to
# the control plane's ($KUBETUNE_BIN_DIR, default ~/.cache/kubetune/bin/k8s-$K8S_VERSION), are
# reused when present, and never replace a control-plane binary. The tests read each
# component's CRDs and webhook configuration from the same module in the Go module cache.
#
#   hack/build-schedulers.sh [all|kueue|scheduler-plugins|volcano]   build what is missing
#   hack/build-schedulers.sh --module NAME                           print the module folder
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.34.4}"
KUEUE_VERSION="${KUEUE_VERSION:-v0.17.0}"
# scheduler-plugins releases track Kubernetes minors: v0.34.x is built on k8s.io/kubernetes 1.34.
# Its k8s.io modules are pinned to the control plane's release ($K8S_VERSION): the module proxy
# does not serve every module of the patch release v0.34.7 names (k8s.io/csi-translation-lib).
SCHEDULER_PLUGINS_VERSION="${SCHEDULER_PLUGINS_VERSION:-v0.34.7}"
# The newest volcano.sh/volcano release the module proxy serves.
VOLCANO_VERSION="${VOLCANO_VERSION:-v1.10.0}"
BIN_DIR="${KUBETUNE_BIN_DIR:-$HOME/.cache/kubetune/bin/k8s-$K8S_VERSION}"
WORK="${KUBETUNE_BUILD_DIR:-$HOME/.cache/kubetune/build}"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
export PATH="/usr/local/go/bin:$PATH"

log() { echo "[build-schedulers] $*" >&2; }

module_dir() { # module@version -> its folder in the module cache (downloaded if missing)
  go mod download -json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])'
}

module_of() { # short name -> module@version
  case "$1" in
    kueue) echo "sigs.k8s.io/kueue@$KUEUE_VERSION" ;;
    scheduler-plugins) echo "sigs.k8s.io/scheduler-plugins@$SCHEDULER_PLUGINS_VERSION" ;;
    volcano) echo "volcano.sh/volcano@$VOLCANO_VERSION" ;;
    *) log "unknown module $1"; return 2 ;;
  esac
}

pin_kubernetes() { # in a module folder: k8s.io/kubernetes and every replaced k8s.io module to $K8S_VERSION
  local minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  local staging="v0.${minor}.${K8S_VERSION##*.}"
  go mod edit -replace "k8s.io/kubernetes=k8s.io/kubernetes@$K8S_VERSION"
  local m
  for m in $(go mod edit -json | python3 -c 'import json, sys
for r in json.load(sys.stdin).get("Replace") or []:
    p = r["Old"]["Path"]
    if p.startswith("k8s.io/") and p != "k8s.io/kubernetes" and r["New"].get("Version", "").startswith("v0."):
        print(p)'); do
    go mod edit -replace "$m=$m@$staging"
  done
}

build_in_module() { # binary-name module@version package ldflags [prepare-function]
  local name="$1" mod="$2" pkg="$3" ld="$4" prepare="${5:-}"
  [ -x "$BIN_DIR/$name" ] && return 0
  log "building $name from $mod (first run on this machine: many minutes)"
  local src
  src=$(module_dir "$mod")
  local dir="$WORK/${mod//\//_}"
  if [ ! -f "$dir/go.mod" ]; then
    rm -rf "$dir.tmp"
    cp -r "$src" "$dir.tmp"
    chmod -R u+w "$dir.tmp"
    if [ -n "$prepare" ]; then (cd "$dir.tmp" && "$prepare"); fi
    mv "$dir.tmp" "$dir"
  fi
  cd "$dir"
  go build -trimpath -ldflags "-s -w $ld" -o "$BIN_DIR/$name.tmp" "$pkg"
  mv "$BIN_DIR/$name.tmp" "$BIN_DIR/$name"
}

build_kueue() {
  build_in_module kueue "$(module_of kueue)" ./cmd/kueue \
    "-X sigs.k8s.io/kueue/pkg/version.GitVersion=$KUEUE_VERSION"
}

build_scheduler_plugins() {
  # Stamped with the Kubernetes release it is built on: the scheduler checks its own version
  # against the Kubernetes versions it may emulate and refuses to start on a v0.34.x stamp.
  local minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  local pkg="k8s.io/component-base/version"
  build_in_module kube-scheduler-plugins "$(module_of scheduler-plugins)" ./cmd/scheduler \
    "-X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor" pin_kubernetes
}

build_volcano() {
  build_in_module vc-scheduler "$(module_of volcano)" ./cmd/scheduler \
    "-X volcano.sh/volcano/pkg/version.Version=$VOLCANO_VERSION"
}

main() {
  local what="${1:-all}"
  case "$what" in
    kueue|all) build_kueue ;;&
    scheduler-plugins|all) build_scheduler_plugins ;;&
    volcano|all) build_volcano ;;&
    kueue|scheduler-plugins|volcano|all) ;;
    *) log "usage: $0 [all|kueue|scheduler-plugins|volcano] | --module NAME"; return 2 ;;
  esac
  echo "$BIN_DIR"
}

# One block, read whole before it runs: editing this file during a build cannot derail it.
{
  if [ "${1:-}" = "--module" ]; then module_dir "$(module_of "${2:-}")"; exit $?; fi
  mkdir -p "$BIN_DIR" "$WORK"
  # Its own lock, so a control-plane build in progress does not hold this one up.
  exec 9>"$BIN_DIR/.build-schedulers.lock"
  flock 9
  main "$@"
  exit $?
}
