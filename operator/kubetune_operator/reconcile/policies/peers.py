"""Which failure ends an attempt: a moment for the worker that caused it to report.

A rank that runs out of GPU memory, or reads bad input, exits with its own code, and its peers
on other workers then fail with plain errors as their collectives break. Whichever pod the
kubelet reports first would otherwise name the failure, so a plain error waits a few seconds
while other workers of the attempt still run; a specific cause that arrives meanwhile is what
status names, and decides whether the job is retried.
"""

from __future__ import annotations

from datetime import datetime

from kubetune_operator.reconcile.classify import GENERIC

PEER_GRACE_SECONDS = 10.0


def seconds_to_wait(
    reason: str, finished: datetime | None, peers_running: bool, now: datetime
) -> float:
    """How long to hold back a failure before ending the attempt on it (0: end it now)."""
    if reason not in GENERIC or finished is None or not peers_running:
        return 0.0
    return max(0.0, PEER_GRACE_SECONDS - (now - finished).total_seconds())
