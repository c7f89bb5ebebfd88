"""ftj:// model sources: a job that continues from another job's output waits for it.

The upstream job must have Succeeded before this job's workers start; if it Failed, there is
no model to start from and this job fails too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kubetune_operator.reconcile.plan import upstream_job
from kubetune_operator.reconcile.policies import finished

if TYPE_CHECKING:
    from kubetune_operator.reconcile.decision import Pass

# How soon to look again while waiting (the upstream job's own events also wake this one).
POLL_SECONDS = 30.0


def step(p: Pass) -> bool:
    """Wait (phase Pending) until the upstream job Succeeded; fail when it Failed."""
    name = upstream_job(p.spec.model.source)
    if name is None or (p.upstream is not None and p.upstream.phase == "Succeeded"):
        return False
    if p.upstream is not None and p.upstream.phase == "Failed":
        return finished.finish(p, "Failed", "UpstreamFailed", f"model source job {name} failed")
    p.phase("Pending", "WaitingForModel", f"waiting for FineTuneJob {name} to succeed")
    p.d.requeue(POLL_SECONDS)
    return True
