"""Status: from (job, its pods, the clock) to the next status and the actions that go with it.

`decide` is the whole reconcile decision as one pure function: the run policies, each a step
in its own module (reconcile/policies/), run in PIPELINE order on one Pass, and the first that
ends the pass wins. The controller only executes the Decision (patch status once, post events,
delete pods, create the rendered children).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from kubetune_operator.api.spec import FineTuneJob
from kubetune_operator.reconcile.conditions import set_condition
from kubetune_operator.reconcile.decision import Decision, Pass, Step, Upstream, owned
from kubetune_operator.reconcile.plan import OperatorSettings
from kubetune_operator.reconcile.policies import (
    backoff,
    conflict,
    created,
    deadline,
    finished,
    gang,
    kueue,
    leftovers,
    peers,
    phase,
    stall,
    start,
    startup,
    success,
    suspend,
    upstream,
)
from kubetune_operator.reconcile.policies.kueue import QueueView
from kubetune_operator.reconcile.timeutil import format_time

PIPELINE: tuple[Step, ...] = (
    finished.step,  # finished earlier: clean up the workers, then the TTL
    created.step,  # condition Created on the first pass
    upstream.step,  # an ftj:// model source: wait for its job to succeed
    kueue.suspended,  # suspended in a queue: the Workload is deactivated, its quota handed back
    suspend.step,  # suspended: stop the workers; resumed: the next attempt
    deadline.step,  # activeDeadlineSeconds
    kueue.step,  # in a queue: no worker without admission; an eviction ends the attempt
    peers.step,  # the failure that ends the attempt, once its cause had a moment to report
    stall.step,  # no progress for stallTimeout is a failure too
    backoff.step,  # a failure ends the attempt: the next one, or Failed
    success.step,  # every worker exited 0
    leftovers.step,  # pods of an earlier attempt still running: wait for them
    startup.step,  # a worker that cannot start its container (startupErrorTimeout)
    gang.step,  # a gang whose scheduler's API is not served: start no worker
    start.step,  # the missing workers' children, rendered here
    conflict.step,  # children another object holds the names of: say so, keep trying
    deadline.start_clock,  # the first start sets startTime and arms the deadline
    kueue.pods_ready,  # tell Kueue whether all workers run
    phase.step,  # Pending -> Initializing -> Running
)


def decide(
    job: FineTuneJob,
    status: dict[str, Any],
    pods: list[dict[str, Any]],
    now: datetime,
    upstream: Upstream | None = None,
    conflict: str | None = None,
    settings: OperatorSettings | None = None,
    queue: QueueView | None = None,
    gang_missing: str | None = None,
) -> Decision:
    """The next status of `job` and the actions to get there. `conflict`: why the last pass
    could not create the job's children (a namesake it does not own), if it could not;
    `queue`: what is known of the job's Kueue queue and Workload, for a job in a queue;
    `gang_missing`: why the PodGroup of its gang cannot be made, if it cannot."""
    p = Pass(job, status, pods, now, upstream, settings, conflict, queue, gang_missing)
    for step in PIPELINE:
        if step(p):
            break
    return p.d


def status_patch(current: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any] | None:
    """Merge patch of the operator-owned keys that changed; None when nothing did."""
    cur = owned(current)
    patch = {k: v for k, v in desired.items() if cur.get(k) != v}
    patch.update({k: None for k in cur if k not in desired})
    return patch or None


# Status keys that only describe progress within a phase (worker counts, the phase message,
# condition messages); a patch of nothing else may wait a moment and ride with the next one.
COUNTS_ONLY = frozenset({"workers", "message", "conditions"})


def can_coalesce(patch: dict[str, Any], decision: Decision) -> bool:
    """True when `patch` only refreshes counts and messages within the phase: no phase,
    attempt, time or failure record, and no event. A gang's pods change one by one; writing
    each step costs the API server a status write per pod, while the changes that users,
    tools and crash safety depend on (a new phase or attempt is written before any pod is
    created or deleted for it) are never held back."""
    return set(patch) <= COUNTS_ONLY and not decision.events


def invalid_spec(
    job_status: dict[str, Any],
    generation: int | None,
    message: str,
    now: datetime,
    reason: str = "InvalidSpec",
) -> dict[str, Any]:
    """Status of a job whose manifest cannot be parsed or planned (reason InvalidSpec) or that
    the platform policy does not allow (PolicyViolation): Failed before any worker starts."""
    st = owned(job_status)
    now_s = format_time(now)
    st.update(phase="Failed", message=message, observedGeneration=generation)
    st.setdefault("completionTime", now_s)
    st["lastFailure"] = {"reason": reason, "message": message[:4096], "time": now_s}
    st["conditions"] = set_condition(
        st.get("conditions", []), "Failed", True, reason, message[:4096], now_s, generation
    )
    return st
