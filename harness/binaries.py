"""Where the control-plane binaries live, and building them when they are missing."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = REPO_ROOT / "hack" / "build-control-plane.sh"
SCHEDULERS_SCRIPT = REPO_ROOT / "hack" / "build-schedulers.sh"
REQUIRED = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
# Components of hack/build-schedulers.sh: name -> the binary it builds.
COMPONENTS = {
    "kueue": "kueue",
    "scheduler-plugins": "kube-scheduler-plugins",
    "volcano": "vc-scheduler",
}


def bin_dir() -> Path:
    """$KUBETUNE_BIN_DIR, else the versioned cache folder the build script uses."""
    if os.environ.get("KUBETUNE_BIN_DIR"):
        return Path(os.environ["KUBETUNE_BIN_DIR"])
    out = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--print-dir"], check=True, capture_output=True, text=True
    )
    return Path(out.stdout.strip())


def missing(directory: Path) -> list[str]:
    """Required binaries not (yet) present and executable in `directory`."""
    return [b for b in REQUIRED if not os.access(directory / b, os.X_OK)]


def ensure_built(directory: Path) -> Path:
    """Build what is missing with hack/build-control-plane.sh (slow only the first time)."""
    if missing(directory):
        env = {**os.environ, "KUBETUNE_BIN_DIR": str(directory)}
        subprocess.run(["bash", str(BUILD_SCRIPT), "all"], check=True, env=env)
    still = missing(directory)
    if still:
        raise RuntimeError(f"{BUILD_SCRIPT} ran but {', '.join(still)} are missing in {directory}")
    return directory


def kubectl_path(directory: Path) -> Path:
    """kubectl from the built binaries if there, else the one on PATH (/usr/bin/kubectl)."""
    if os.access(directory / "kubectl", os.X_OK):
        return directory / "kubectl"
    found = shutil.which("kubectl") or "/usr/bin/kubectl"
    return Path(found)


def ensure_component(directory: Path, component: str) -> Path:
    """The binary of a hack/build-schedulers.sh component (kueue, scheduler-plugins, volcano),
    built into `directory` first if it is missing (slow only the first time)."""
    binary = directory / COMPONENTS[component]
    if not os.access(binary, os.X_OK):
        env = {**os.environ, "KUBETUNE_BIN_DIR": str(directory)}
        subprocess.run(["bash", str(SCHEDULERS_SCRIPT), component], check=True, env=env)
    if not os.access(binary, os.X_OK):
        raise RuntimeError(f"{SCHEDULERS_SCRIPT} {component} ran but {binary} is missing")
    return binary


def module_dir(component: str) -> Path:
    """The released Go module a component was built from, in the Go module cache: its CRDs
    and webhook configurations are read from there, so they match the binary."""
    out = subprocess.run(
        ["bash", str(SCHEDULERS_SCRIPT), "--module", component],
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(out.stdout.strip())
