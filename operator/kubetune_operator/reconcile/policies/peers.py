"""Which failure ends an attempt: a moment for the worker that caused it to report.

A rank that runs out of GPU memory, or reads bad input, exits with its own code, and its peers
on other workers then fail with plain errors as their collectives break. Whichever pod the
kubelet reports first would otherwise name the failure, so a plain error waits a few seconds
while other workers of the attempt still run; a specific cause that arrives meanwhile is what
status names, and decides whether the job is retried.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from kubetune_operator.reconcile.classify import GENERIC
from kubetune_operator.reconcile.observe import first_failure
from kubetune_operator.reconcile.timeutil import seconds_until

if TYPE_CHECKING:
    from kubetune_operator.reconcile.decision import Pass

PEER_GRACE_SECONDS = 10.0


def seconds_to_wait(
    reason: str, finished: datetime | None, peers_running: bool, now: datetime
) -> float:
    """How long to hold back a failure before ending the attempt on it (0: end it now)."""
    if reason not in GENERIC or not peers_running:
        return 0.0
    return max(0.0, seconds_until(finished, PEER_GRACE_SECONDS, now) or 0.0)


def step(p: Pass) -> bool:
    """Find the failure that ends the attempt (p.failure); while a plain error may still be
    named better by a peer that runs, change nothing and look again (the pass ends)."""
    ran = p.old_phase in ("Initializing", "Running")
    failure = first_failure(p.obs, running_attempt=ran)
    if failure is not None:
        running = any(w.phase not in ("Succeeded", "Failed") for w in p.obs.current)
        wait = seconds_to_wait(failure.reason, failure.finished, running, p.now)
        if wait > 0:
            p.d.requeue(wait)
            return True
    p.failure = failure
    return False
