"""Observe: the worker pods of a job, reduced to what the status decision needs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubetune_operator.api import constants as c
from kubetune_operator.reconcile.classify import (
    GENERIC,
    WorkerFailure,
    classify_pod,
    classify_vanished,
    disruption_reason,
)
from kubetune_operator.reconcile.names import worker_pod
from kubetune_operator.reconcile.timeutil import parse_time

# The kubelet's waiting reasons for a container that cannot start until a user fixes
# something (pkg/kubelet/images, pkg/kubelet/container) -> status.lastFailure.reason.
STARTUP_ERRORS = {
    "ErrImagePull": "ImagePullError",
    "ImagePullBackOff": "ImagePullError",
    "InvalidImageName": "ImagePullError",
    "ErrImageNeverPull": "ImagePullError",
    "ErrImageInspect": "ImagePullError",
    "RegistryUnavailable": "ImagePullError",
    "SignatureValidationFailed": "ImagePullError",
    "CreateContainerConfigError": "ContainerConfigError",
    "CreateContainerError": "ContainerConfigError",
}


FAR = datetime.max.replace(tzinfo=UTC)  # sorts after any time a pod finished


@dataclass(frozen=True)
class Worker:
    """One worker pod as observed."""

    name: str
    attempt: int
    index: int
    phase: str
    scheduled: bool
    ready: bool
    terminating: bool
    created: datetime | None
    deleted_at: datetime | None
    grace_seconds: int
    waiting_problem: str | None
    failure: WorkerFailure | None
    disruption: str | None = None
    waiting_reason: str | None = None  # the kubelet's reason, when waiting_problem is set
    scheduled_at: datetime | None = None
    unschedulable: str | None = None  # the scheduler's last word on a pod it could not place


@dataclass(frozen=True)
class Observation:
    """The current attempt's workers and the leftovers of other attempts."""

    job: str
    attempt: int
    nodes: int
    current: tuple[Worker, ...]
    others: tuple[Worker, ...]

    @property
    def counts(self) -> dict[str, int]:
        """status.workers for the current attempt."""
        cur = [w for w in self.current if not w.terminating or w.phase in ("Succeeded", "Failed")]
        return {
            "total": self.nodes,
            "pending": sum(w.phase == "Pending" for w in cur),
            "ready": sum(w.ready for w in cur),
            "running": sum(w.phase == "Running" for w in cur),
            "succeeded": sum(w.phase == "Succeeded" for w in cur),
            "failed": sum(w.phase == "Failed" for w in cur),
        }

    @property
    def missing(self) -> list[int]:
        """Node ranks of the current attempt with no pod."""
        have = {w.index for w in self.current}
        return [i for i in range(self.nodes) if i not in have]

    @property
    def attempt_started(self) -> datetime | None:
        """When the current attempt's first pod was created."""
        times = [w.created for w in self.current if w.created]
        return min(times) if times else None


def _condition_since(pod: dict[str, Any], kind: str) -> datetime | None:
    """When condition `kind` of the pod last turned True, if it is True."""
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind and cond.get("status") == "True":
            return parse_time(cond.get("lastTransitionTime"))
    return None


def _unschedulable(pod: dict[str, Any]) -> str | None:
    """The scheduler's message on a pod it could not place (PodScheduled=False), if any."""
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return str(cond.get("message") or cond.get("reason") or "") or None
    return None


def _condition(pod: dict[str, Any], kind: str) -> bool:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return bool(cond.get("status") == "True")
    return False


def _waiting(pod: dict[str, Any]) -> dict[str, Any] | None:
    """The waiting state of a container stuck for a reason users must fix, if any."""
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in STARTUP_ERRORS:
            return dict(waiting)
    return None


def waiting_problem(pod: dict[str, Any]) -> str | None:
    """A container stuck waiting for a reason users must fix (image, config), if any."""
    waiting = _waiting(pod)
    if waiting is None:
        return None
    msg = waiting.get("message") or ""
    return f"{waiting['reason']}: {msg}".strip(": ")


def worker_from_pod(pod: dict[str, Any]) -> Worker:
    """Reduce one pod object to a Worker."""
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    spec = pod.get("spec") or {}
    phase = (pod.get("status") or {}).get("phase") or "Pending"
    return Worker(
        name=meta.get("name", ""),
        attempt=int(labels.get(c.LABEL_ATTEMPT, "0") or 0),
        index=int(labels.get(c.LABEL_WORKER_INDEX, "0") or 0),
        phase=phase,
        scheduled=bool(spec.get("nodeName")) or _condition(pod, "PodScheduled"),
        ready=_condition(pod, "Ready"),
        terminating=meta.get("deletionTimestamp") is not None,
        created=parse_time(meta.get("creationTimestamp")),
        deleted_at=parse_time(meta.get("deletionTimestamp")),
        grace_seconds=int(spec.get("terminationGracePeriodSeconds") or 30),
        waiting_problem=waiting_problem(pod),
        failure=classify_pod(pod),
        disruption=disruption_reason(pod),
        waiting_reason=(_waiting(pod) or {}).get("reason"),
        scheduled_at=_condition_since(pod, "PodScheduled"),
        unschedulable=_unschedulable(pod),
    )


def observe(job: str, pods: list[dict[str, Any]], attempt: int, nodes: int) -> Observation:
    """Split the job's pods into the current attempt and the others."""
    workers = sorted((worker_from_pod(p) for p in pods), key=lambda w: (w.attempt, w.index))
    return Observation(
        job=job,
        attempt=attempt,
        nodes=nodes,
        current=tuple(w for w in workers if w.attempt == attempt),
        others=tuple(w for w in workers if w.attempt != attempt),
    )


def cause_first(failure: WorkerFailure) -> tuple[bool, datetime, bool]:
    """Sort key putting the likely cause of a gang failure first.

    A failing rank ends its peers on other workers with plain errors (exit 1), so a specific
    class comes first, then the earliest to finish, then (timestamps have whole seconds) a
    process killed by a signal, which a peer's failure does not do.
    """
    killed = (failure.exit_code or 0) > 128
    return failure.reason in GENERIC, failure.finished or FAR, not killed


def first_failure(obs: Observation, running_attempt: bool) -> WorkerFailure | None:
    """The failure that ends the current attempt, if any.

    A Failed pod always ends it; once the attempt ran (`running_attempt`), a pod deleted or
    vanished by someone else ends it too, since torchrun cannot continue without it.
    """
    failed = [w.failure for w in obs.current if w.failure]
    if failed:
        return min(failed, key=cause_first)
    if running_attempt:
        for w in obs.current:
            if w.terminating and w.phase not in ("Succeeded", "Failed"):
                return classify_vanished(w.name, w.disruption)
        if obs.missing:
            return classify_vanished(worker_pod(obs.job, obs.attempt, obs.missing[0]), None)
    return None
