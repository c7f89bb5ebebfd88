"""suspend: stop the workers (SIGTERM lets them checkpoint) and keep the job; resume later."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kubetune_operator.reconcile.decision import Event

if TYPE_CHECKING:
    from kubetune_operator.reconcile.decision import Pass


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


def saves_checkpoints(p: Pass) -> bool:
    """The workers have somewhere to save: spec.checkpoint or the operator's default store."""
    return p.spec.checkpoint is not None or p.settings.default_checkpoint is not None


def step(p: Pass) -> bool:
    """Suspended: delete every worker and end the pass. Resumed: the next attempt (if one ran
    before the suspension) starts from the latest checkpoint; the pass goes on."""
    if p.run_policy.suspend:
        p.d.delete_pods = [w.name for w in (*p.obs.current, *p.obs.others) if not w.terminating]
        reason, msg, loses = suspended_message(
            saves_checkpoints(p), p.st.get("startTime") is not None
        )
        p.phase("Suspended", reason, msg, warning=loses)
        p.cond("Suspended", True, reason, msg)
        p.cond("Running", False, "Suspended", "suspended")
        p.st["workers"] = p.obs.counts
        return True
    if is_resuming(p.run_policy.suspend, p.old_phase):
        if p.st.get("startTime") is not None:  # an attempt ran before: the next one resumes it
            p.attempt += 1
            p.st["attempt"] = p.attempt
        p.cond(
            "Suspended",
            False,
            "Resumed",
            "resumed from the latest checkpoint"
            if saves_checkpoints(p)
            else "resumed from step 0 (no spec.checkpoint)",
        )
        p.d.events.append(Event("Normal", "Resumed", f"starting attempt {p.attempt}"))
        p.observe()
    return False
