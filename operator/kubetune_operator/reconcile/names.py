"""Deterministic names of a job's child objects.

Names are a pure function of the job name and the attempt, so a restarted operator finds the
objects it made before instead of making duplicates.
"""

from __future__ import annotations


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


def pod_group(job: str, attempt: int) -> str:
    """Kueue pod-group name: one group per attempt, admitted as a whole."""
    return f"{job}-a{attempt}"


def master_host(job: str, attempt: int, namespace: str) -> str:
    """DNS name of worker 0 (the rendezvous master) through the headless Service."""
    return f"{worker_pod(job, attempt, 0)}.{service(job)}.{namespace}.svc"


CHECKPOINT_KEY_SECRET = "kubetune-checkpoint-key"
"""The Secret in each namespace whose key signs and verifies its jobs' checkpoints; the operator
creates it when a job with spec.checkpoint first starts there and never rewrites it."""
