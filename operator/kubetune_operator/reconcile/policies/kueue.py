"""Kueue admission: a queued job runs only while Kueue admits its Workload.

Kueue decides; this policy puts its verdict into the job's words: Queued (with Kueue's reason
and message), Admitted (by which ClusterQueue, on which flavors), Preempted (naming the
preempting job where Kueue's message gives its uid). An eviction ends the attempt like any
preemption: it counts toward runPolicy.preemptionLimit, never backoffLimit; the workers get
SIGTERM and save a checkpoint; the quota is handed back once they are gone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubetune_operator.reconcile.classify import WorkerFailure
from kubetune_operator.reconcile.workload import Priority, Verdict


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
