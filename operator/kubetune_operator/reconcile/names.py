"""Deterministic names of a job's child objects.

Names are a pure function of the job name and the attempt, so a restarted operator finds the
objects it made before instead of making duplicates.
"""

from __future__ import annotations

import hashlib


def worker_pod(job: str, attempt: int, index: int) -> str:
    """Pod (and hostname) of worker `index` in `attempt`: <job>-a<attempt>-<index>."""
    return f"{job}-a{attempt}-{index}"


def service(job: str) -> str:
    """Headless Service giving the workers stable DNS names (their subdomain)."""
    return f"{job}-workers"


def config_map(job: str, attempt: int) -> str:
    """ConfigMap with the TrainerConfig of one attempt (the attempt number is inside it)."""
    return f"{job}-a{attempt}-config"


def network_policy(job: str) -> str:
    """NetworkPolicy that lets the job's workers take connections only from each other."""
    return f"{job}-workers"


def trainer_identity(job: str) -> str:
    """ServiceAccount, Role and RoleBinding the workers use to report progress."""
    return f"{job}-trainer"


def gang(job: str) -> str:
    """PodGroup of the workers for a gang scheduler: one per job, shared by its attempts."""
    return f"{job}-gang"


def workload(job: str, uid: str | None) -> str:
    """Kueue Workload of the job, named the way Kueue names its jobs' Workloads
    (<kind>-<name>-<hash>): the hash of the uid keeps a re-created namesake from meeting the
    old job's Workload while the garbage collector has yet to delete it."""
    digest = hashlib.sha256((uid or "").encode()).hexdigest()[:5]
    return f"finetunejob-{job}-{digest}"


def master_host(job: str, attempt: int, namespace: str) -> str:
    """DNS name of worker 0 (the rendezvous master) through the headless Service."""
    return f"{worker_pod(job, attempt, 0)}.{service(job)}.{namespace}.svc"


CHECKPOINT_KEY_SECRET = "kubetune-checkpoint-key"
"""The Secret in each namespace whose key signs and verifies its jobs' checkpoints; the operator
creates it when a job with spec.checkpoint first starts there and never rewrites it."""
