"""Success: every worker of the attempt exited 0; the model is at the output location."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kubetune_operator.reconcile.plan import output_location
from kubetune_operator.reconcile.policies import finished

if TYPE_CHECKING:
    from kubetune_operator.reconcile.decision import Pass


def step(p: Pass) -> bool:
    """Record the attempt's worker counts; when all succeeded, the job Succeeded."""
    counts = p.obs.counts
    p.st["workers"] = counts
    if counts["succeeded"] != p.spec.resources.nodes:
        return False
    p.st["output"] = {"uri": output_location(p.spec)}
    p.cond("Restarting", False, "Succeeded", "finished")
    return finished.finish(p, "Succeeded", "Succeeded", f"training finished in attempt {p.attempt}")
