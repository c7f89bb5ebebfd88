"""Gang scheduling: what a job whose workers wait for their gang says while it waits."""

from __future__ import annotations

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
