"""Start the attempt: render its children (planned once, here) when workers are missing.

The Decision carries what to create, so the controller only executes it; a job that cannot be
planned (an upstream job without output, two hub tokens) fails with reason InvalidSpec and a
message naming the field, instead of an error the operator would retry forever.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kubetune_operator.reconcile.parse import InvalidSpec
from kubetune_operator.reconcile.plan import resolve
from kubetune_operator.reconcile.policies import finished
from kubetune_operator.reconcile.render import render

if TYPE_CHECKING:
    from kubetune_operator.reconcile.decision import Pass


def step(p: Pass) -> bool:
    """Missing workers: the attempt's children go into the Decision."""
    if p.obs.missing:
        upstream_output = p.upstream.output_uri if p.upstream else None
        try:
            placement = p.queue.placement if p.queue else None
            plan = resolve(p.job, p.attempt, p.settings, upstream_output, placement)
        except InvalidSpec as err:
            return cannot_plan(p, str(err))
        p.d.start_attempt = p.attempt
        p.d.children = render(plan)
        p.d.checkpoint_key = plan.checkpoints
    return False


def cannot_plan(p: Pass, message: str) -> bool:
    """The job is Failed with reason InvalidSpec: the spec cannot become pods."""
    p.st["lastFailure"] = {
        "reason": "InvalidSpec",
        "message": message[:4096],
        "time": p.now_s,
        "attempt": p.attempt,
    }
    return finished.finish(p, "Failed", "InvalidSpec", message[:4096])
