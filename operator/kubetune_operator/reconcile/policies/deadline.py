"""activeDeadlineSeconds: the job must finish within this many seconds of its start or, like a
Kubernetes Job, of its latest resume (or Kueue readmission)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from kubetune_operator.reconcile.policies import finished
from kubetune_operator.reconcile.timeutil import parse_time, seconds_until

if TYPE_CHECKING:
    from kubetune_operator.reconcile.decision import Pass


def counting_from(start: datetime | None, resumed: datetime | None) -> datetime | None:
    """The deadline clock starts with the job and restarts on each resume (as for Jobs)."""
    if start is None or resumed is None:
        return start
    return max(start, resumed)


def resumed_at(conditions: list[dict[str, Any]]) -> datetime | None:
    """When the job was last resumed (Suspended turned False) or admitted again by Kueue
    (Admitted turned True), if ever: time spent suspended or queued does not count."""
    times = [
        parse_time(cond.get("lastTransitionTime"))
        for cond in conditions
        if (cond.get("type"), cond.get("status")) in (("Suspended", "False"), ("Admitted", "True"))
    ]
    return max((t for t in times if t is not None), default=None)


def step(p: Pass) -> bool:
    """Fail the job once its deadline passed (DeadlineExceeded); else look again at it."""
    limit = p.run_policy.active_deadline_seconds
    since = counting_from(parse_time(p.st.get("startTime")), resumed_at(p.st.get("conditions", [])))
    left = seconds_until(since, limit, p.now)
    if left is not None and left <= 0:
        msg = f"the job ran longer than activeDeadlineSeconds={limit}"
        p.st["lastFailure"] = {
            "reason": "DeadlineExceeded",
            "message": msg,
            "time": p.now_s,
            "attempt": p.attempt,
        }
        return finished.finish(p, "Failed", "DeadlineExceeded", msg)
    p.d.requeue(left)
    return False


def start_clock(p: Pass) -> bool:
    """The job's first start sets startTime; its deadline counts from now (look again then)."""
    if p.st.get("startTime") is None:
        p.st["startTime"] = p.now_s
        p.d.requeue(seconds_until(p.now, p.run_policy.active_deadline_seconds, p.now))
    return False
