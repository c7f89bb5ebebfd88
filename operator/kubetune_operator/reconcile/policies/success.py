"""Success: every worker of the attempt exited 0; the model is at the output location.

What a finished job says comes from the trainer's last progress report: which step's weights
the output holds, and, when early stopping ended training, that it did and where.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kubetune_operator.reconcile.plan import output_location
from kubetune_operator.reconcile.policies import finished

if TYPE_CHECKING:
    from kubetune_operator.reconcile.decision import Pass


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


def step(p: Pass) -> bool:
    """Record the attempt's worker counts; when all succeeded, the job Succeeded (or
    StoppedEarly) with the output's location and step."""
    counts = p.obs.counts
    p.st["workers"] = counts
    if counts["succeeded"] != p.spec.resources.nodes:
        return False
    p.st["output"] = output_status(output_location(p.spec), p.progress)
    p.cond("Restarting", False, "Succeeded", "finished")
    return finished.finish(p, "Succeeded", *outcome(p.attempt, p.progress))
