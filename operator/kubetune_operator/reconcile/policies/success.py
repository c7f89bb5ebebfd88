"""success: what a finished job says, from the trainer's last progress report: which step's
weights the output holds, and, when early stopping ended training, that it did and where."""

from __future__ import annotations

from typing import Any


def output_status(uri: str, progress: dict[str, Any] | None) -> dict[str, Any]:
    """status.output: where the model went and the step whose weights it holds."""
    step = (progress or {}).get("exportedStep")
    return {"uri": uri} if step is None else {"uri": uri, "step": step}


def outcome(attempt: int, progress: dict[str, Any] | None) -> tuple[str, str]:
    """(reason, message) of the Succeeded phase; StoppedEarly names the step it stopped at and
    the step that was exported."""
    p = progress or {}
    if not p.get("stoppedEarly"):
        return "Succeeded", f"training finished in attempt {attempt}"
    stopped = (
        f"training stopped early at step {p.get('step')} of {p.get('totalSteps')}: the eval "
        "loss stopped improving (spec.training.earlyStopping)"
    )
    best, exported = p.get("bestStep"), p.get("exportedStep")
    if exported == best:
        return "StoppedEarly", f"{stopped}; the output holds the best weights, step {best}"
    return "StoppedEarly", (
        f"{stopped}; the best weights (step {best}) were lost in a restart, the output holds "
        f"step {exported}"
    )
