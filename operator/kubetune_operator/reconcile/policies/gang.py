"""Gang scheduling: no worker starts without its PodGroup; what a job whose workers wait for
their gang says while it waits."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kubetune_operator.reconcile.decision import Pass

# How soon to look again for a gang scheduler's API that is not served yet.
POLL_SECONDS = 30.0

MAX_SCHEDULER_MESSAGE = 300


def waiting_message(scheduler: str, workers: int, bound: int, scheduler_says: str | None) -> str:
    """Why the workers are not all running yet: the gang scheduler binds all of them together
    or none, and its last word on a worker it could not place."""
    out = (
        f"waiting for the gang: {scheduler} binds all {workers} workers together or none "
        f"({bound}/{workers} bound)"
    )
    if scheduler_says:
        out += f"; the scheduler says: {scheduler_says[:MAX_SCHEDULER_MESSAGE]}"
    return out


def step(p: Pass) -> bool:
    """Workers without their PodGroup would be scheduled one by one: while the gang
    scheduler's API is not served, start none (phase Pending, a Warning naming it)."""
    if not p.obs.missing or p.gang_missing is None:
        return False
    p.phase("Pending", "GangSchedulerNotInstalled", p.gang_missing, warning=True)
    p.d.requeue(POLL_SECONDS)
    return True
