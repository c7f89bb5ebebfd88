"""backoffLimit and preemptionLimit: how many ended attempts are followed by another one.

An attempt that failed counts toward backoffLimit; one whose workers were stopped from outside
(preempted by Kueue or the scheduler, evicted) says nothing about the job and counts toward
its own budget, preemptionLimit, which is unlimited unless set: a queued job may be preempted
any number of times and resume from its checkpoint each time.
"""

from __future__ import annotations

# Failure classes of an attempt stopped from outside rather than failed.
DISRUPTIONS = ("Preempted", "Evicted")


def is_disruption(reason: str) -> bool:
    """True when an attempt ended this way counts toward preemptionLimit, not backoffLimit."""
    return reason in DISRUPTIONS


def may_restart(restarts_so_far: int, backoff_limit: int) -> bool:
    """True while another attempt is allowed (backoffLimit 0 means never restart)."""
    return restarts_so_far < backoff_limit


def may_resume(preemptions_so_far: int, preemption_limit: int | None) -> bool:
    """True while another attempt after a preemption is allowed (None: always)."""
    return preemption_limit is None or preemptions_so_far < preemption_limit
