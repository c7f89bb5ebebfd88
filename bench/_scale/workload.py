"""What the benchmark submits: gang sizes, fake GPU nodes, FineTuneJobs and Indexed Jobs.

Both kinds of job get the same gang sizes and the same pod shape (one nvidia.com/gpu per
worker), so the Job controller is a fair baseline for how fast pods appear and status follows.
"""

from __future__ import annotations

from typing import Any

from kubetune_operator.api import constants as c

FAKE_NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
GPU = "nvidia.com/gpu"
IMAGE = "registry.invalid/kubetune/trainer:bench"
BIG_GANG = 64


def gang_sizes(jobs: int, big: int, smallest: int = 1, largest: int = 8) -> list[int]:
    """`jobs` gang sizes cycling smallest..largest; `big` of them are BIG_GANG workers, spread
    evenly over the submission order starting with the first (so later ones meet a busy
    operator, not an idle one)."""
    if jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {jobs}")
    if not 0 <= big <= jobs:
        raise ValueError(f"--big must be within 0..--jobs ({jobs}), got {big}")
    if not 1 <= smallest <= largest:
        raise ValueError(f"gang sizes need 1 <= smallest <= largest, got {smallest}..{largest}")
    span = largest - smallest + 1
    sizes = [smallest + i % span for i in range(jobs)]
    for k in range(big):
        sizes[k * jobs // big] = BIG_GANG
    return sizes


def fake_node(index: int, gpus: int) -> dict[str, Any]:
    """A kwok-managed Node with `gpus` nvidia.com/gpu and its own pod CIDR (10.128.<i>.0/24)."""
    name = f"kwok-gpu-{index:04d}"
    resources = {"cpu": "96", "memory": "1Ti", "pods": "110", GPU: str(gpus)}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {FAKE_NODE_ANNOTATION[0]: FAKE_NODE_ANNOTATION[1]},
            "labels": {"kubernetes.io/hostname": name, "type": "kwok"},
        },
        "spec": {"podCIDR": f"10.{128 + index // 256}.{index % 256}.0/24"},
        "status": {"capacity": resources, "allocatable": resources},
    }


def finetune_job(name: str, workers: int) -> dict[str, Any]:
    """A FineTuneJob of `workers` pods with one GPU each; nothing in it is ever dialled."""
    return {
        "apiVersion": c.API_VERSION,
        "kind": c.KIND,
        "metadata": {"name": name},
        "spec": {
            "model": {"source": "file:///models/tiny", "dtype": "float32"},
            "dataset": {"train": "file:///data/train.jsonl"},
            "method": {"type": "full"},
            "training": {"maxSteps": 10},
            "resources": {"nodes": workers, "gpusPerNode": 1, "image": IMAGE},
            "output": {"uri": "file:///out/model"},
            "runPolicy": {"backoffLimit": 0, "cleanPodPolicy": "None"},
        },
    }


def indexed_job(name: str, workers: int) -> dict[str, Any]:
    """The baseline: an Indexed batch/v1 Job of `workers` pods with one GPU each."""
    container = {
        "name": "trainer",
        "image": IMAGE,
        "resources": {"requests": {GPU: "1"}, "limits": {GPU: "1"}},
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "completionMode": "Indexed",
            "completions": workers,
            "parallelism": workers,
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "containers": [container],
                }
            },
        },
    }


def job_of_pod(pod: dict[str, Any]) -> str | None:
    """The job a pod belongs to: the FineTuneJob label or the Job controller's label."""
    labels = pod.get("metadata", {}).get("labels") or {}
    return labels.get(c.LABEL_JOB) or labels.get("batch.kubernetes.io/job-name")
