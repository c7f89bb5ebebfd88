"""suspend: stop the workers (SIGTERM lets them checkpoint) and keep the job; resume later."""

from __future__ import annotations


def is_resuming(suspend: bool, phase: str | None) -> bool:
    """The job was Suspended and spec.runPolicy.suspend is false again: start a new attempt."""
    return not suspend and phase == "Suspended"


def suspended_message(has_checkpoint: bool, started: bool) -> tuple[str, str, bool]:
    """(reason, message, progress lost) for a suspended job.

    Without spec.checkpoint (and no default checkpoint store of the operator) the workers have
    nowhere to save their state: a job that already ran starts again from step 0 when resumed,
    and status says so (with a Warning event) rather than promising a resume.
    """
    if has_checkpoint or not started:
        return "Suspended", "the workers were stopped; set suspend to false to resume", False
    return (
        "SuspendedWithoutCheckpoint",
        "the workers were stopped without saving a checkpoint (the job has no spec.checkpoint "
        "and the operator no default checkpoint store); set suspend to false to start again "
        "from step 0",
        True,
    )
