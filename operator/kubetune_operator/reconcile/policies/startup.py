"""startupErrorTimeout: a worker whose container cannot start is reported, and optionally failed.

An image that cannot be pulled, or a Secret or key the pod references that does not exist,
keeps a pod Pending with no end; the kubelet retries, so the problem may also be fixed while
it waits. After the timeout (counted from when the pod was scheduled, since nothing is pulled
before that, however long a queue held the pod) the job says why; with failOnStartupError the
attempt also ends as failed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kubetune_operator.reconcile.classify import WorkerFailure
from kubetune_operator.reconcile.conditions import condition_status
from kubetune_operator.reconcile.decision import Event, failure_record
from kubetune_operator.reconcile.observe import STARTUP_ERRORS
from kubetune_operator.reconcile.policies import backoff
from kubetune_operator.reconcile.timeutil import parse_duration, seconds_until

if TYPE_CHECKING:
    from kubetune_operator.reconcile.decision import Pass


def failure_class(waiting_reason: str | None) -> str | None:
    """The failure class of a container waiting for `waiting_reason`; None if it is no error."""
    return STARTUP_ERRORS.get(waiting_reason or "")


def stuck_worker(p: Pass) -> WorkerFailure | None:
    """The first worker of the attempt that could not start within startupErrorTimeout; for
    the others still inside it, look again when it runs out."""
    timeout = p.run_policy.startup_error_timeout
    stuck: WorkerFailure | None = None
    for w in p.obs.current:
        cls = failure_class(w.waiting_reason)
        if cls is None or w.terminating:
            continue
        left = seconds_until(w.scheduled_at or w.created, parse_duration(timeout), p.now)
        if left is not None and left > 0:
            p.d.requeue(left)
        elif stuck is None:
            stuck = WorkerFailure(
                reason=cls,
                message=f"worker {w.name} could not start for {timeout}: {w.waiting_problem}"[
                    :1024
                ],
                exit_code=None,
                pod=w.name,
            )
    return stuck


def step(p: Pass) -> bool:
    """Once a worker is stuck: condition StartupError, status.lastFailure and a Warning event
    (once); with failOnStartupError the attempt ends. The condition turns False when no worker
    is stuck any more (the user fixed the image or the Secret)."""
    stuck = stuck_worker(p)
    was = condition_status(p.st.get("conditions", []), "StartupError")
    if stuck is None:
        if was == "True":
            p.cond("StartupError", False, "Started", "no worker of the attempt is failing to start")
        return False
    if was != "True":
        p.d.events.append(Event("Warning", stuck.reason, stuck.message))
        p.st["lastFailure"] = failure_record(stuck, p.obs.attempt, p.now_s)
    p.cond("StartupError", True, stuck.reason, stuck.message)
    return p.run_policy.fail_on_startup_error and backoff.end_attempt(p, stuck)
