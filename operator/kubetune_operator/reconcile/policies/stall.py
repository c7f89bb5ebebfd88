"""Stall detection: a running attempt whose progress stopped advancing is ended and retried."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from kubetune_operator.reconcile.classify import WorkerFailure
from kubetune_operator.reconcile.timeutil import parse_duration, parse_time, seconds_until

if TYPE_CHECKING:
    from kubetune_operator.reconcile.decision import Pass


def last_progress(
    progress: dict[str, Any] | None, attempt: int, attempt_started: datetime | None
) -> datetime | None:
    """When this attempt last reported progress, counting only after its first step.

    Progress left over from an earlier attempt (by its attempt field, or older than this
    attempt's pods) does not count.
    """
    if not progress or not progress.get("step"):
        return None
    if progress.get("attempt") is not None and progress["attempt"] != attempt:
        return None
    updated = parse_time(progress.get("updatedAt"))
    if updated is None or (attempt_started is not None and updated < attempt_started):
        return None
    return updated


def step(p: Pass) -> bool:
    """A Running attempt without a failure: Stalled (p.failure) once its progress is older than
    stallTimeout; else look again when it would be."""
    if p.failure is not None or p.old_phase != "Running":
        return False
    timeout = p.run_policy.stall_timeout
    last = last_progress(p.progress, p.obs.attempt, p.obs.attempt_started)
    left = seconds_until(last, parse_duration(timeout), p.now)
    if left is None:
        return False
    if left > 0:
        p.d.requeue(left)
        return False
    step_reached = (p.progress or {}).get("step")
    p.failure = WorkerFailure(
        reason="Stalled",
        message=f"no progress for {timeout} (stuck at step {step_reached})",
        exit_code=None,
        pod=p.obs.current[0].name if p.obs.current else "",
    )
    return False
