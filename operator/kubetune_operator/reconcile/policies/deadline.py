"""activeDeadlineSeconds: the whole job (all attempts) must finish within this many seconds."""

from __future__ import annotations

from datetime import datetime


def seconds_left(
    start: datetime | None, deadline_seconds: int | None, now: datetime
) -> float | None:
    """Seconds until the deadline (<= 0: exceeded); None when no deadline applies yet."""
    if deadline_seconds is None or start is None:
        return None
    return deadline_seconds - (now - start).total_seconds()


def counting_from(start: datetime | None, resumed: datetime | None) -> datetime | None:
    """The deadline clock starts with the job and restarts on each resume (as for Jobs)."""
    if start is None or resumed is None:
        return start
    return max(start, resumed)
