"""Failure classification: why did a worker pod end badly?

The class is what users read in status.lastFailure and what the restart metric is labelled
with; the classes in NOT_RETRIED also end the job instead of starting another attempt.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kubetune_operator.reconcile.timeutil import parse_time
from kubetune_trainer.contract import EXIT_BAD_INPUT, EXIT_GPU_OOM, EXIT_PREEMPTED

# Classes that end the job at once: a new attempt with the same spec fails the same way.
NOT_RETRIED = ("InvalidSpec", "GPUOutOfMemory")
# Classes that say nothing of the cause: a peer of the failed rank often ends this way.
GENERIC = ("Error", "Unknown")

# DisruptionTarget condition reasons (kubernetes pod disruption conditions) -> class.
DISRUPTION_REASONS = {
    "PreemptionByScheduler": "Preempted",
    "PreemptionByKubeScheduler": "Preempted",
    "EvictionByEvictionAPI": "Evicted",
    "TerminationByKubelet": "Evicted",
    "DeletionByTaintManager": "NodeLost",
    "DeletionByPodGC": "NodeLost",
}
POD_REASONS = {
    "Evicted": "Evicted",
    "NodeLost": "NodeLost",
    "Preempting": "Preempted",
    "Shutdown": "Evicted",
}


@dataclass(frozen=True)
class WorkerFailure:
    """One failed worker: class, detail, exit code, and when its trainer container ended."""

    reason: str
    message: str
    exit_code: int | None
    pod: str
    finished: datetime | None = None  # None for a pod that vanished or never ran


def terminated_state(pod: dict[str, Any]) -> dict[str, Any] | None:
    """The trainer container's terminated state, if it has one."""
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        term = (cs.get("state") or {}).get("terminated")
        if term:
            return dict(term)
    return None


def disruption_reason(pod: dict[str, Any]) -> str | None:
    """Class from a DisruptionTarget=True condition, if any."""
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "DisruptionTarget" and cond.get("status") == "True":
            return DISRUPTION_REASONS.get(cond.get("reason", ""), "Evicted")
    return None


def classify_exit(exit_code: int | None, reason: str | None) -> str:
    """Class from the container's exit code and terminated reason."""
    if reason == "OOMKilled":
        return "OOMKilled"
    if exit_code == EXIT_PREEMPTED:
        return "Preempted"
    if exit_code == EXIT_BAD_INPUT:
        return "InvalidSpec"
    if exit_code == EXIT_GPU_OOM:
        return "GPUOutOfMemory"
    return "Error"


def classify_pod(pod: dict[str, Any]) -> WorkerFailure | None:
    """The failure of a Failed pod (or None when the pod has not failed)."""
    status = pod.get("status") or {}
    if status.get("phase") != "Failed":
        return None
    name = pod.get("metadata", {}).get("name", "")
    term = terminated_state(pod) or {}
    exit_code = term.get("exitCode")
    disrupted = disruption_reason(pod)
    pod_reason = POD_REASONS.get(status.get("reason") or "")
    cls = disrupted or pod_reason or classify_exit(exit_code, term.get("reason"))
    detail = (
        term.get("message") or status.get("message") or term.get("reason") or status.get("reason")
    )
    message = f"worker {name} failed"
    if exit_code is not None:
        message += f" with exit code {exit_code}"
    if detail:
        message += f": {str(detail).strip()[:512]}"
    return WorkerFailure(
        reason=cls,
        message=message,
        exit_code=exit_code,
        pod=name,
        finished=parse_time(term.get("finishedAt")),
    )


def classify_vanished(pod_name: str, disruption: str | None) -> WorkerFailure:
    """A worker that is gone or being deleted while its attempt ran (not by the operator)."""
    return WorkerFailure(
        reason=disruption or "NodeLost",
        message=f"worker {pod_name} was deleted while the attempt was running",
        exit_code=None,
        pod=pod_name,
    )
