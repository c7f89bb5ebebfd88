"""ttlSecondsAfterFinished: delete the whole job this long after it finished."""

from __future__ import annotations

from datetime import datetime


def seconds_until_delete(
    finished: datetime | None, ttl_seconds: int | None, now: datetime
) -> float | None:
    """Seconds left before the job is deleted (<= 0: delete now); None: keep it."""
    if ttl_seconds is None or finished is None:
        return None
    return ttl_seconds - (now - finished).total_seconds()
