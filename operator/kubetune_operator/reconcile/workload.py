"""Kueue's Workload API: the Workload kubetune creates for a queued job, and Kueue's verdict
read back from it.

A job in a queue is admitted the way Kueue's own job integrations are: one Workload per job,
owned by it, with one pod set (the workers). No worker exists before Kueue admits the Workload;
when Kueue evicts it (preemption, a stopped queue, deactivation) the workers are stopped with
SIGTERM, which makes them save a checkpoint, and only once they are gone is the quota handed
back: the admission is cleared, as Kueue's integrations do, and Kueue queues the job again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from kubetune_operator.reconcile.conditions import set_condition

GROUP = "kueue.x-k8s.io"
VERSION = "v1beta2"
PLURAL = "workloads"
POD_SET = "workers"
# Labels Kueue reads on a Workload: the owner's uid names the preemptor in eviction messages.
JOB_UID_LABEL = f"{GROUP}/job-uid"
# Kueue's label for a WorkloadPriorityClass, on the job (as on Kueue's own jobs).
PRIORITY_CLASS_LABEL = f"{GROUP}/priority-class"
# Eviction reasons after which Kueue queues the workload again at once (else it backs off or
# waits to be reactivated); mirrored from Kueue's job reconciler.
REQUEUED_AFTER = ("Preempted", "NodeFailures")
_JOB_UID = re.compile(r"JobUID: ([0-9a-fA-F-]{36})")


@dataclass(frozen=True)
class Priority:
    """Where the Workload's priority comes from, and its value."""

    group: str  # "kueue.x-k8s.io" (WorkloadPriorityClass) or "scheduling.k8s.io" (PriorityClass)
    kind: str
    name: str
    value: int


@dataclass(frozen=True)
class Placement:
    """What Kueue's admission adds to the workers: the node labels and tolerations of the
    ResourceFlavors it assigned."""

    node_labels: dict[str, str] = field(default_factory=dict)
    tolerations: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class Reason:
    """A condition's reason and message."""

    reason: str
    message: str


@dataclass(frozen=True)
class Verdict:
    """Kueue's decision on a job's Workload, read from its status."""

    name: str
    queue: str
    active: bool
    reserved: bool  # QuotaReserved: quota is held for it in a ClusterQueue
    admitted: bool  # Admitted: quota and every admission check; the workers may run
    finished: bool
    evicted: Reason | None  # Evicted=True: Kueue wants the workers stopped (or did)
    preempted: Reason | None  # Preempted=True: the eviction was a preemption
    pending: Reason | None  # QuotaReserved=False: why it waits (Kueue's words)
    pods_ready: bool | None
    cluster_queue: str | None
    flavors: tuple[str, ...]


def _conditions(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        cond.get("type", ""): cond for cond in (body.get("status") or {}).get("conditions") or []
    }


def _true(conds: dict[str, dict[str, Any]], kind: str) -> Reason | None:
    cond = conds.get(kind)
    if cond is None or cond.get("status") != "True":
        return None
    return Reason(str(cond.get("reason") or kind), str(cond.get("message") or ""))


def verdict(body: dict[str, Any]) -> Verdict:
    """What Kueue decided about a Workload."""
    conds = _conditions(body)
    spec, status = body.get("spec") or {}, body.get("status") or {}
    admission = status.get("admission") or {}
    flavors: list[str] = []
    for assignment in admission.get("podSetAssignments") or []:
        for flavor in (assignment.get("flavors") or {}).values():
            if flavor not in flavors:
                flavors.append(flavor)
    reserved = conds.get("QuotaReserved") or {}
    ready = conds.get("PodsReady")
    return Verdict(
        name=body["metadata"]["name"],
        queue=str(spec.get("queueName") or ""),
        active=spec.get("active", True) is not False,
        reserved=reserved.get("status") == "True",
        admitted=_true(conds, "Admitted") is not None,
        finished=_true(conds, "Finished") is not None,
        evicted=_true(conds, "Evicted"),
        preempted=_true(conds, "Preempted"),
        pending=Reason(str(reserved.get("reason") or ""), str(reserved.get("message") or ""))
        if reserved.get("status") == "False"
        else None,
        pods_ready=None if ready is None else ready.get("status") == "True",
        cluster_queue=admission.get("clusterQueue"),
        flavors=tuple(flavors),
    )


def priority_class(
    labels: dict[str, str], priority_class_name: str | None
) -> tuple[str, str, str, str] | None:
    """(group, kind, name, where it was set) of the class the Workload's priority comes from:
    Kueue's kueue.x-k8s.io/priority-class label on the job (a WorkloadPriorityClass) first,
    as for Kueue's own jobs, else spec.resources.priorityClassName (a PriorityClass)."""
    if labels.get(PRIORITY_CLASS_LABEL):
        return (GROUP, "WorkloadPriorityClass", labels[PRIORITY_CLASS_LABEL], f"label {PRIORITY_CLASS_LABEL}")  # fmt: skip
    if priority_class_name:
        return ("scheduling.k8s.io", "PriorityClass", priority_class_name, "spec.resources.priorityClassName")  # fmt: skip
    return None


def preemptor_job_uid(message: str) -> str | None:
    """The uid of the job whose Workload preempted this one, as Kueue's message names it."""
    found = _JOB_UID.search(message)
    return found.group(1) if found else None


def pod_template(spec: dict[str, Any]) -> dict[str, Any]:
    """The part of a worker pod's spec that Kueue's admission reads: what the containers
    request and where the pod may run (flavors are matched against the node selector,
    affinity and tolerations)."""
    keep = ("nodeSelector", "affinity", "tolerations", "priorityClassName", "schedulerName")
    containers = [
        {k: ctr[k] for k in ("name", "image", "resources") if k in ctr}
        for ctr in spec["containers"]
    ]
    return {
        "spec": {
            "containers": containers,
            "restartPolicy": spec.get("restartPolicy", "Never"),
            **{k: spec[k] for k in keep if k in spec},
        }
    }


def workload(
    *,
    name: str,
    namespace: str,
    job_uid: str,
    owner: dict[str, Any],
    labels: dict[str, str],
    queue: str,
    workers: int,
    worker_spec: dict[str, Any],
    active: bool,
    priority: Priority | None,
) -> dict[str, Any]:
    """The Workload of a job: one pod set of `workers` pods shaped like `worker_spec`."""
    spec: dict[str, Any] = {
        "queueName": queue,
        "active": active,
        "podSets": [{"name": POD_SET, "count": workers, "template": pod_template(worker_spec)}],
    }
    if priority is not None:
        spec["priorityClassRef"] = {
            "group": priority.group,
            "kind": priority.kind,
            "name": priority.name,
        }
        spec["priority"] = priority.value
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Workload",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {**labels, JOB_UID_LABEL: job_uid},
            "ownerReferences": [owner],
        },
        "spec": spec,
    }


def _set(
    body: dict[str, Any], conds: list[dict[str, Any]], kind: str, on: bool, why: Reason, now: str
) -> list[dict[str, Any]]:
    generation = (body.get("metadata") or {}).get("generation")
    message = why.message[:32768] or why.reason
    return set_condition(conds, kind, on, why.reason, message, now, generation)


def released(body: dict[str, Any], now: str) -> dict[str, Any]:
    """Status patch that hands the quota of an evicted Workload back once its workers are
    gone: the admission goes, QuotaReserved and Admitted turn False, and Requeued says
    whether Kueue queues it again at once (as Kueue's job integrations write it)."""
    conds = list((body.get("status") or {}).get("conditions") or [])
    evicted = verdict(body).evicted or Reason("Evicted", "the workers were stopped")
    conds = _set(body, conds, "Requeued", evicted.reason in REQUEUED_AFTER, evicted, now)
    conds = _set(body, conds, "QuotaReserved", False, Reason("Pending", evicted.message), now)
    conds = _set(body, conds, "Admitted", False, Reason("NoReservation", "The workload has no reservation"), now)  # fmt: skip
    return {"conditions": conds, "admission": None}


def finished(body: dict[str, Any], succeeded: bool, message: str, now: str) -> dict[str, Any]:
    """Status patch marking the Workload Finished, which releases its quota for good."""
    conds = list((body.get("status") or {}).get("conditions") or [])
    why = Reason("Succeeded" if succeeded else "Failed", message)
    return {"conditions": _set(body, conds, "Finished", True, why, now)}


def pods_ready(body: dict[str, Any], ready: bool, now: str) -> dict[str, Any]:
    """Status patch of PodsReady, which Kueue's waitForPodsReady waits for."""
    conds = list((body.get("status") or {}).get("conditions") or [])
    why = (
        Reason("PodsReady", "All workers are running")
        if ready
        else Reason("WaitForRecovery", "At least one worker is not running")
    )
    return {"conditions": _set(body, conds, "PodsReady", ready, why, now)}


def placement(flavors: list[dict[str, Any]]) -> Placement:
    """The node labels and tolerations of the assigned ResourceFlavors, merged."""
    labels: dict[str, str] = {}
    tolerations: list[dict[str, Any]] = []
    for flavor in flavors:
        spec = flavor.get("spec") or {}
        labels.update(spec.get("nodeLabels") or {})
        for tol in spec.get("tolerations") or []:
            if tol not in tolerations:
                tolerations.append(tol)
    return Placement(labels, tuple(tolerations))
