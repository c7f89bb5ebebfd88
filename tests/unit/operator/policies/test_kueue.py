"""policies.kueue: no worker runs without Kueue's admission; an eviction ends the attempt
(preemptionLimit, not backoffLimit) and hands the quota back only once the workers are gone."""

from __future__ import annotations

from typing import Any

import pytest

from kubetune_operator.reconcile import workload as wl
from kubetune_operator.reconcile.policies import kueue
from kubetune_operator.reconcile.policies.kueue import QueueView
from tests.unit.operator.helpers import at, condition, gang, job, outcome, pod, running_status
from tests.unit.operator.test_queueing import ADMITTED, EVICTED, PENDING, workload_body

pytestmark = pytest.mark.unit

QUEUED = {"phase": "Queued"}


def view(body: dict[str, Any] | None, **extra: Any) -> QueueView:
    return QueueView("gpu-queue", wl.verdict(body) if body else None, body, **extra)


@pytest.mark.parametrize(
    ("status", "pods", "queue", "expected"),
    [
        (QUEUED, [], None, {"ended": False, "phase": "Queued"}),
        ({}, [], view(None), {"ended": True, "phase": "Queued", "requeue": kueue.POLL_SECONDS}),
        (QUEUED, [], view(workload_body(*PENDING)), {"ended": True, "phase": "Queued", "deleted": []}),
        (QUEUED, [], view(workload_body(*ADMITTED, admitted_on="gpu")), {"ended": False, "events": ["Admitted"]}),
        (running_status(), gang(), view(workload_body(*EVICTED, admitted_on="gpu")),
         {"ended": True, "phase": "Restarting", "deleted": ["llama-lora-a1-0", "llama-lora-a1-1"]}),
        (running_status(attempt=2, restarts=1, preemptions=1, phase="Restarting"),
         [pod(0, attempt=1, deleting=True)], view(workload_body(*EVICTED, admitted_on="gpu")),
         {"ended": True, "phase": "Restarting", "deleted": [], "requeue": 5.0}),
        (running_status(attempt=2, restarts=1, preemptions=1, phase="Restarting"), [],
         view(workload_body(*EVICTED, admitted_on="gpu")), {"ended": True, "phase": "Queued"}),
        ({}, [], QueueView("gpu-queue", problem="no Kueue here"), {"ended": True, "phase": "Queued"}),
    ],
    ids=["not-queued", "no-workload", "pending", "admitted", "evicted-running",
         "evicted-stopping", "evicted-gone", "cannot-queue"],
)  # fmt: skip
def test_kueue_gate(status: dict, pods: list, queue: QueueView | None, expected: dict) -> None:
    got = outcome(kueue.step, job(), status, pods, at(1), queue=queue)
    assert {k: got[k] for k in expected} == expected


def test_only_the_gate_renders_a_workload_and_a_stopped_one_is_handed_back() -> None:
    got = outcome(kueue.step, job(), {}, [], at(1), queue=view(None))
    assert got["decision"].workload["kind"] == "Workload"
    assert (
        outcome(kueue.step, job(), {}, [], at(1), queue=QueueView("q", problem="x"))[
            "decision"
        ].workload
        is None
    )
    st = running_status(attempt=2, restarts=1, preemptions=1, phase="Restarting")
    gone = outcome(kueue.step, job(), st, [], at(1), queue=view(workload_body(*EVICTED, admitted_on="gpu")))  # fmt: skip
    assert gone["decision"].workload_status["admission"] is None
    assert condition(gone["status"], "Queued") == ("True", "Preempted")


@pytest.mark.parametrize(
    ("suspend", "body", "expected_active"),
    [
        (True, workload_body(*ADMITTED, admitted_on="gpu"), False),
        (False, workload_body(*ADMITTED, admitted_on="gpu"), None),
    ],
    ids=["suspended-deactivates", "running-untouched"],
)
def test_kueue_suspended(suspend: bool, body: dict, expected_active: bool | None) -> None:
    j = job(runPolicy={"suspend": suspend})
    got = outcome(kueue.suspended, j, running_status(), gang(), at(1), queue=view(body))
    assert got["ended"] is False and got["decision"].workload_active is expected_active


def test_kueue_pods_ready_follows_the_workers() -> None:
    body = workload_body(*ADMITTED, admitted_on="gpu")
    ready = outcome(kueue.pods_ready, job(), running_status(), gang(), at(1), queue=view(body))
    conds = {c["type"]: c["status"] for c in ready["decision"].workload_status["conditions"]}
    assert conds["PodsReady"] == "True"
    pending = outcome(kueue.pods_ready, job(), running_status(), gang("Pending"), at(1), queue=view(body))  # fmt: skip
    assert pending["decision"].workload_status is None  # never reported ready: nothing to take back
