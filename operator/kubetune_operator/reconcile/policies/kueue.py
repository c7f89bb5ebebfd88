"""Kueue admission: a queued job runs only while Kueue admits its Workload.

Kueue decides; this policy puts its verdict into the job's words: Queued (with Kueue's reason
and message), Admitted (by which ClusterQueue, on which flavors), Preempted (naming the
preempting job where Kueue's message gives its uid). An eviction ends the attempt like any
preemption: it counts toward runPolicy.preemptionLimit, never backoffLimit; the workers get
SIGTERM and save a checkpoint; the quota is handed back once they are gone.

Three steps: `suspended` (a suspended job holds no quota), `step` (no worker runs without
admission) and `pods_ready` (Kueue's waitForPodsReady hears when all workers run).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from kubetune_operator.reconcile import workload
from kubetune_operator.reconcile.classify import WorkerFailure
from kubetune_operator.reconcile.conditions import condition_status
from kubetune_operator.reconcile.decision import Event
from kubetune_operator.reconcile.observe import Observation
from kubetune_operator.reconcile.parse import InvalidSpec
from kubetune_operator.reconcile.plan import resolve
from kubetune_operator.reconcile.policies import backoff, start
from kubetune_operator.reconcile.policies.leftovers import STALE_POD_SLACK
from kubetune_operator.reconcile.render import kueue_workload
from kubetune_operator.reconcile.workload import Placement, Priority, Verdict

if TYPE_CHECKING:
    from kubetune_operator.reconcile.decision import Pass

# Kueue's verdicts arrive as Workload events; a queued job is looked at now and then all the same.
POLL_SECONDS = 30.0


@dataclass(frozen=True)
class QueueView:
    """What a pass knows of the job's queue."""

    name: str
    """The LocalQueue (spec.queue.name or the kueue.x-k8s.io/queue-name label)."""
    verdict: Verdict | None = None
    """Kueue's verdict on the job's Workload; None while there is no Workload."""
    body: dict[str, Any] | None = None
    """The Workload as read (status patches are computed from it)."""
    preemptor: str | None = None
    """The FineTuneJob whose Workload preempted this one, when Kueue names it."""
    problem: str | None = None
    """Why no Workload can be created (no Kueue API, an unknown priority class)."""
    priority: Priority | None = None
    """The priority the Workload is created with."""
    placement: Placement | None = None
    """What the admission adds to where the workers run (the admitted flavors' node labels
    and tolerations)."""


def waiting(view: QueueView) -> tuple[str, str]:
    """(reason, message) of a job that waits for admission, in Kueue's words where it has
    given any."""
    q, v = view.name, view.verdict
    if view.problem is not None:
        return "CannotQueue", f"the job cannot be queued in LocalQueue {q}: {view.problem}"
    if v is None:
        return "Queued", f"waiting for Kueue to admit the job in LocalQueue {q}"
    if not v.active:
        return "Deactivated", f"the Workload {v.name} is deactivated: Kueue does not admit it"
    if v.reserved:
        return (
            "QuotaReserved",
            f"quota reserved in ClusterQueue {v.cluster_queue}: waiting for admission checks",
        )
    if v.pending is not None and v.pending.message:
        said = v.pending.message
        named = said if f"LocalQueue {q}" in said else f"LocalQueue {q}: {said}"
        return v.pending.reason or "Pending", named
    return "Queued", f"waiting for Kueue to admit the job in LocalQueue {q}"


def handed_back(view: QueueView) -> tuple[str, str]:
    """(reason, message) of a job whose evicted workers are gone and whose quota was just
    handed back: it waits to be admitted again."""
    ev = view.verdict.evicted if view.verdict else None
    reason, why = (ev.reason, ev.message) if ev else ("Evicted", "evicted")
    return (
        reason,
        f"LocalQueue {view.name}: {why}{preempted_by(view)}; waiting to be admitted again",
    )


def preempted_by(view: QueueView) -> str:
    """ "; preempted by FineTuneJob X" when the preemptor is known, else ""."""
    return f"; preempted by FineTuneJob {view.preemptor}" if view.preemptor else ""


def eviction(view: QueueView, pod: str) -> WorkerFailure:
    """The end of an attempt Kueue evicted: Preempted for a preemption, Evicted otherwise
    (a stopped queue, a pods-ready timeout, ...); both spend preemptionLimit."""
    v = view.verdict
    ev = v.evicted if v is not None else None
    if ev is None:
        return WorkerFailure(
            reason="Evicted",
            message=f"Kueue does not admit the job's Workload in LocalQueue {view.name}",
            exit_code=None,
            pod=pod,
        )
    reason = "Preempted" if ev.reason == "Preempted" else "Evicted"
    return WorkerFailure(
        reason=reason,
        message=f"Kueue evicted the workers ({ev.reason}): {ev.message}{preempted_by(view)}"[:1024],
        exit_code=None,
        pod=pod,
    )


def admitted(v: Verdict) -> str:
    """Message of the Admitted condition."""
    flavors = f" on flavor {', '.join(v.flavors)}" if v.flavors else ""
    return f"admitted by ClusterQueue {v.cluster_queue}{flavors} (Workload {v.name})"


def step(p: Pass) -> bool:
    """No worker runs without admission: a job without a Workload gets one and waits (phase
    Queued); an eviction stops the workers (they save a checkpoint on SIGTERM) and hands the
    quota back once they are gone. An admitted job goes on."""
    q = p.queue
    if q is None:
        return False
    v = q.verdict
    if v is None:
        return _new_workload(p, q) or _queued(p, q)
    if not v.active:
        p.d.workload_active = True
    if v.admitted and v.evicted is None:
        _admitted(p, v)
        return False
    if p.obs.counts["succeeded"] == p.spec.resources.nodes:
        return False  # it finished just as Kueue let go: the success step records it
    live = [
        w for w in p.obs.current if not w.terminating and w.phase not in ("Succeeded", "Failed")
    ]
    if live:
        failure = eviction(q, live[0].name)
        if failure.reason == "Preempted" and v.preempted is not None:
            p.cond("Preempted", True, v.preempted.reason, failure.message)
        p.cond("Admitted", False, v.evicted.reason if v.evicted else "NotAdmitted", failure.message)
        return backoff.end_attempt(p, failure, then=f"the job waits in LocalQueue {q.name} again")
    stopping = holding(p.obs, p.now)
    if stopping:
        why = v.evicted.reason if v.evicted else "Evicted"
        saving = " to save a checkpoint and" if p.spec.checkpoint is not None else " to"
        p.phase("Restarting", why, f"waiting for {len(stopping)} worker(s){saving} stop")
        p.d.requeue(5)
        return True
    if v.reserved and v.evicted is not None and q.body is not None:
        p.d.workload_status = workload.released(q.body, p.now_s)
        return _queued(p, q, released=True)
    return _queued(p, q)


def suspended(p: Pass) -> bool:
    """A suspended job holds no quota: its Workload is deactivated (Kueue evicts it, if
    admitted) and handed back once the workers are gone. The suspend step runs next."""
    q = p.queue
    if q is None or not p.run_policy.suspend:
        return False
    v = q.verdict
    if v is None:
        return _new_workload(p, q)
    if v.active:
        p.d.workload_active = False
    if v.reserved and v.evicted is not None and q.body and not holding(p.obs, p.now):
        p.d.workload_status = workload.released(q.body, p.now_s)
    return False


def pods_ready(p: Pass) -> bool:
    """Tell Kueue when all workers run (and when they stop doing so): its waitForPodsReady
    evicts a Workload whose pods do not get ready in time."""
    q = p.queue
    if q is None or q.body is None or q.verdict is None or not q.verdict.admitted:
        return False
    counts = p.obs.counts
    ready = counts["running"] + counts["succeeded"] == counts["total"] and not p.obs.missing
    if q.verdict.pods_ready != ready and (ready or q.verdict.pods_ready):
        p.d.workload_status = workload.pods_ready(q.body, ready, p.now_s)
    return False


def holding(obs: Observation, now: datetime) -> list[str]:
    """Workers of any attempt that still hold node resources (a pod being deleted counts
    until its grace period and STALE_POD_SLACK have passed)."""
    out = []
    for w in (*obs.current, *obs.others):
        if w.phase in ("Succeeded", "Failed"):
            continue
        if w.terminating and w.deleted_at and now > w.deleted_at + STALE_POD_SLACK:
            continue
        out.append(w.name)
    return out


def _new_workload(p: Pass, q: QueueView) -> bool:
    """Render the job's Workload into the Decision (active unless the job is suspended), when
    it can be queued; True when the job cannot be planned (it is Failed: the pass ends)."""
    if q.problem is not None:
        return False
    upstream_output = p.upstream.output_uri if p.upstream else None
    try:
        plan = resolve(p.job, p.attempt, p.settings, upstream_output)
    except InvalidSpec as err:
        return start.cannot_plan(p, str(err))
    p.d.workload = kueue_workload(plan, q.name, not p.run_policy.suspend, q.priority)
    return False


def _queued(p: Pass, q: QueueView, released: bool = False) -> bool:
    """Phase Queued with Kueue's reason and message (or, right after the quota of an evicted
    Workload was handed back, the eviction's); no worker is started. Ends the pass."""
    reason, msg = handed_back(q) if released else waiting(q)
    p.phase("Queued", reason, msg)
    p.cond("Queued", True, reason, msg)
    if condition_status(p.st.get("conditions", []), "Admitted") == "True":
        p.cond("Admitted", False, reason, msg)
    p.cond("Running", False, "Queued", msg)
    p.st["workers"] = p.obs.counts
    p.d.requeue(POLL_SECONDS)
    return True


def _admitted(p: Pass, v: Verdict) -> None:
    """Conditions of an admitted job (an Admitted event the first time)."""
    msg = admitted(v)
    conds = p.st.get("conditions", [])
    if condition_status(conds, "Admitted") != "True":
        p.d.events.append(Event("Normal", "Admitted", msg))
    p.cond("Admitted", True, "Admitted", msg)
    p.cond("Queued", False, "Admitted", msg)
    if condition_status(conds, "Preempted") == "True":
        p.cond("Preempted", False, "Admitted", msg)
