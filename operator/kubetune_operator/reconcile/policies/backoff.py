"""backoffLimit and preemptionLimit: how many ended attempts are followed by another one.

An attempt that failed counts toward backoffLimit; one whose workers were stopped from outside
(preempted by Kueue or the scheduler, evicted) says nothing about the job and counts toward
its own budget, preemptionLimit, which is unlimited unless set: a queued job may be preempted
any number of times and resume from its checkpoint each time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kubetune_operator.reconcile.classify import NOT_RETRIED, WorkerFailure
from kubetune_operator.reconcile.decision import failure_record
from kubetune_operator.reconcile.policies import finished

if TYPE_CHECKING:
    from kubetune_operator.reconcile.decision import Pass

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


def step(p: Pass) -> bool:
    """The failure a step before found ends the attempt."""
    return p.failure is not None and end_attempt(p, p.failure)


def end_attempt(p: Pass, failure: WorkerFailure, then: str | None = None) -> bool:
    """Gang semantics: the whole attempt goes; start the next one or fail the job.

    A failure spends backoffLimit; a preemption or eviction spends preemptionLimit instead,
    so a job that Kueue preempts again and again keeps resuming from its checkpoint. `then`
    says what comes next when it is not an immediate new attempt (a queued job waits for
    Kueue). Returns True: the pass ends here.
    """
    rp, attempt = p.run_policy, p.obs.attempt
    p.st["lastFailure"] = failure_record(failure, attempt, p.now_s)
    p.st["workers"] = p.obs.counts
    restarts = int(p.st.get("restarts") or 0)
    preemptions = int(p.st.get("preemptions") or 0)
    disrupted = is_disruption(failure.reason)
    if failure.reason in NOT_RETRIED:
        return finished.finish(p, "Failed", failure.reason, f"not retried: {failure.message}")
    if disrupted and not may_resume(preemptions, rp.preemption_limit):
        msg = (
            f"attempt {attempt} ended ({failure.reason}) and preemptionLimit="
            f"{rp.preemption_limit} is used up: {failure.message}"
        )
        return finished.finish(p, "Failed", "PreemptionLimitExceeded", msg)
    if not disrupted and not may_restart(restarts - preemptions, rp.backoff_limit):
        msg = (
            f"attempt {attempt} failed ({failure.reason}) and backoffLimit={rp.backoff_limit} "
            f"is used up: {failure.message}"
        )
        return finished.finish(p, "Failed", "BackoffLimitExceeded", msg)
    p.st["attempt"] = attempt + 1
    p.st["restarts"] = restarts + 1
    if disrupted:
        p.st["preemptions"] = preemptions + 1
    p.d.delete_pods = [w.name for w in p.obs.current if not w.terminating]
    p.d.restart_reason = failure.reason
    after = then or f"starting attempt {attempt + 1}"
    msg = f"attempt {attempt} ended ({failure.reason}): {failure.message}; {after}"
    p.phase("Restarting", failure.reason, msg, warning=True)
    p.cond("Restarting", True, failure.reason, msg)
    p.cond("Running", False, failure.reason, msg)
    p.d.requeue(1)
    return True
