"""suspend: stop the workers (SIGTERM lets them checkpoint) and keep the job; resume later."""

from __future__ import annotations


def is_resuming(suspend: bool, phase: str | None) -> bool:
    """The job was Suspended and spec.runPolicy.suspend is false again: start a new attempt."""
    return not suspend and phase == "Suspended"
