"""GPUs for local workers: each worker gets its own slice of this machine's GPUs, as each pod
gets its own gpusPerNode GPUs.

torchrun numbers the ranks of every worker from LOCAL_RANK 0, and the trainer uses cuda:LOCAL_RANK;
without a CUDA_VISIBLE_DEVICES slice per worker, every worker of a multi-worker run would land on
the same first GPUs.
"""

from __future__ import annotations

import shutil
import subprocess

from kubetune_operator.reconcile.parse import InvalidSpec

VISIBLE = "CUDA_VISIBLE_DEVICES"


def visible_devices(env: dict[str, str]) -> list[str] | None:
    """The GPUs this run may use: CUDA_VISIBLE_DEVICES when set, else those nvidia-smi lists,
    else None (unknown: the slices are then numbered from 0 unchecked)."""
    if env.get(VISIBLE) is not None:
        return [d.strip() for d in env[VISIBLE].split(",") if d.strip()]
    smi = shutil.which("nvidia-smi", path=env.get("PATH"))
    if smi is None:
        return None
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return [
        str(i) for i, _ in enumerate(ln for ln in out.stdout.splitlines() if ln.startswith("GPU "))
    ]


def device_slices(devices: list[str] | None, nodes: int, gpus_per_node: int) -> list[str | None]:
    """CUDA_VISIBLE_DEVICES of each worker, by node rank: consecutive gpus_per_node devices each
    (None for CPU workers); too few devices is bad input naming the fields."""
    if gpus_per_node == 0:
        return [None] * nodes
    needed = nodes * gpus_per_node
    if devices is None:
        devices = [str(i) for i in range(needed)]
    if len(devices) < needed:
        raise InvalidSpec(
            f"spec.resources: {nodes} nodes x gpusPerNode {gpus_per_node} need {needed} GPUs on "
            f"this machine, which has {len(devices)} ({VISIBLE} or nvidia-smi); lower "
            "spec.resources.nodes or spec.resources.gpusPerNode"
        )
    return [",".join(devices[r * gpus_per_node : (r + 1) * gpus_per_node]) for r in range(nodes)]
