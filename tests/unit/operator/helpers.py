"""Builders for job and pod objects used by the operator's table tests."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from kubetune_operator.api import constants as c
from kubetune_operator.api.spec import FineTuneJob
from kubetune_operator.reconcile.classify import WorkerFailure
from kubetune_operator.reconcile.decision import Pass, Step, Upstream
from kubetune_operator.reconcile.policies.kueue import QueueView
from kubetune_operator.reconcile.timeutil import format_time

HERE = Path(__file__).parent
T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def manifest(**spec_overrides: Any) -> dict[str, Any]:
    """The 2-node LoRA manifest, with top-level spec sections replaced."""
    doc = yaml.safe_load((HERE / "lora-2node.yaml").read_text())
    for key, value in spec_overrides.items():
        doc["spec"][key] = value
    return doc


def job(**spec_overrides: Any) -> FineTuneJob:
    return FineTuneJob.model_validate(manifest(**spec_overrides))


def with_run_policy(**policy: Any) -> FineTuneJob:
    doc = manifest()
    doc["spec"]["runPolicy"] = {**doc["spec"].get("runPolicy", {}), **policy}
    return FineTuneJob.model_validate(doc)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def pod(
    index: int,
    attempt: int = 1,
    phase: str = "Running",
    *,
    job_name: str = "llama-lora",
    exit_code: int | None = None,
    reason: str | None = None,
    pod_reason: str | None = None,
    scheduled: bool = True,
    ready: bool | None = None,
    deleting: bool = False,
    created: float = 0,
    disruption: str | None = None,
    waiting: str | None = None,
    finished: float | None = None,
) -> dict[str, Any]:
    """A worker pod as the API server returns it (`finished`: when its container terminated)."""
    conditions = [{"type": "PodScheduled", "status": "True" if scheduled else "False"}]
    if ready if ready is not None else phase == "Running":
        conditions.append({"type": "Ready", "status": "True"})
    if disruption:
        conditions.append({"type": "DisruptionTarget", "status": "True", "reason": disruption})
    state: dict[str, Any] = {}
    if exit_code is not None or reason:
        state = {
            "terminated": {
                "exitCode": exit_code if exit_code is not None else 0,
                "reason": reason or "Error",
            }
        }
        if finished is not None:
            state["terminated"]["finishedAt"] = format_time(at(finished))
    elif waiting:
        state = {"waiting": {"reason": waiting, "message": "image not found"}}
    meta: dict[str, Any] = {
        "name": f"{job_name}-a{attempt}-{index}",
        "namespace": "team-a",
        "labels": {
            c.LABEL_JOB: job_name,
            c.LABEL_ATTEMPT: str(attempt),
            c.LABEL_WORKER_INDEX: str(index),
            c.LABEL_ROLE: "worker",
        },
        "creationTimestamp": format_time(at(created)),
    }
    if deleting:
        meta["deletionTimestamp"] = format_time(at(created + 1))
    status: dict[str, Any] = {"phase": phase, "conditions": conditions}
    if state:
        status["containerStatuses"] = [{"name": "trainer", "state": state}]
    if pod_reason:
        status["reason"] = pod_reason
    return {
        "metadata": meta,
        "spec": {"nodeName": "node-1" if scheduled else None, "terminationGracePeriodSeconds": 300},
        "status": status,
    }


def gang(phase: str = "Running", attempt: int = 1, nodes: int = 2) -> list[dict[str, Any]]:
    return [pod(i, attempt, phase) for i in range(nodes)]


def running_status(attempt: int = 1, restarts: int = 0, **extra: Any) -> dict[str, Any]:
    st = {
        "phase": "Running",
        "attempt": attempt,
        "restarts": restarts,
        "startTime": format_time(T0),
    }
    st.update(extra)
    return copy.deepcopy(st)


def outcome(
    step: Step,
    job_: FineTuneJob,
    status: dict[str, Any],
    pods: list[dict[str, Any]],
    now: datetime,
    upstream: Upstream | None = None,
    failure: WorkerFailure | None = None,
    queue: QueueView | None = None,
    gang_missing: str | None = None,
) -> dict[str, Any]:
    """Run one policy step on a fresh pass; what it decided, for table tests: whether the pass
    ended, the phase, the pods to delete, the events' reasons, the requeue and the status."""
    p = Pass(job_, status, pods, now, upstream, queue=queue, gang_missing=gang_missing)
    p.failure = failure
    ended = step(p)
    return {
        "ended": ended,
        "phase": p.st.get("phase"),
        "deleted": sorted(p.d.delete_pods),
        "events": [e.reason for e in p.d.events],
        "requeue": p.d.requeue_after,
        "status": p.st,
        "decision": p.d,
        "failure": p.failure,
    }


def condition(status: dict[str, Any], kind: str) -> tuple[str, str] | None:
    """(status, reason) of condition `kind`, if set."""
    for cond in status.get("conditions", []):
        if cond["type"] == kind:
            return cond["status"], cond["reason"]
    return None
