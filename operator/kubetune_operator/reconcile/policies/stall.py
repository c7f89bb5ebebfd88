"""Stall detection: a running attempt whose progress stopped advancing is ended and retried."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from kubetune_operator.reconcile.timeutil import parse_time


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


def seconds_until_stalled(
    last: datetime | None, timeout_seconds: float, now: datetime
) -> float | None:
    """Seconds before the attempt counts as stalled (<= 0: stalled); None: not watched yet."""
    if last is None:
        return None
    return timeout_seconds - (now - last).total_seconds()
