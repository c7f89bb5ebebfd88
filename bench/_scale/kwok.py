"""kwok as a child process: simulated kubelets for annotated fake nodes only.

The stage files come from kwok's own Go module (the version the binary was built from), plus
the benchmark's on-demand completion stage. kwok's pod-complete stage is left out on purpose:
pods finish only when the benchmark says so.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from bench._scale.workload import FAKE_NODE_ANNOTATION
from harness import procs

KWOK_VERSION = "v0.8.0"
BENCH_DIR = Path(__file__).resolve().parents[1]
ON_DEMAND_STAGE = BENCH_DIR / "kwok-pod-complete-on-demand.yaml"
MODULE_STAGES = (
    "node/fast/node-initialize.yaml",
    "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "pod/fast/pod-ready.yaml",
    "pod/fast/pod-delete.yaml",
)
LEASE_SECONDS = 40


def stage_dir() -> Path:
    """kustomize/stage of kwok's module: $KUBETUNE_KWOK_STAGES, else the Go module cache."""
    if os.environ.get("KUBETUNE_KWOK_STAGES"):
        return Path(os.environ["KUBETUNE_KWOK_STAGES"])
    modcache = os.environ.get("GOMODCACHE") or str(Path.home() / "go" / "pkg" / "mod")
    return Path(modcache) / "sigs.k8s.io" / f"kwok@{KWOK_VERSION}" / "kustomize" / "stage"


def stage_files(root: Path) -> list[Path]:
    """The stage files kwok is started with; a clear error names the first one missing."""
    files = [root / rel for rel in MODULE_STAGES] + [ON_DEMAND_STAGE]
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(
                f"kwok stage file {f} is missing (set KUBETUNE_KWOK_STAGES to kwok "
                f"{KWOK_VERSION}'s kustomize/stage folder)"
            )
    return files


def kwok_args(kubeconfig: Path, stages: list[Path]) -> list[str]:
    """Flags: our kubeconfig, only annotated nodes, node leases, the given stages."""
    key, value = FAKE_NODE_ANNOTATION
    return [
        f"--kubeconfig={kubeconfig}",
        "--manage-all-nodes=false",
        f"--manage-nodes-with-annotation-selector={key}={value}",
        f"--node-lease-duration-seconds={LEASE_SECONDS}",
        *(f"--config={s}" for s in stages),
    ]


def start(
    bin_dir: Path, kubeconfig: Path, log: Path, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    """Start kwok in its own process group (stop it with harness.procs.stop)."""
    binary = bin_dir / "kwok"
    if not os.access(binary, os.X_OK):
        raise FileNotFoundError(f"no kwok binary at {binary} (hack/build-control-plane.sh)")
    return procs.spawn([str(binary), *kwok_args(kubeconfig, stage_files(stage_dir()))], log, env)
