"""policies.phase: Pending -> Initializing -> Running from the attempt's workers."""

from __future__ import annotations

import pytest

from kubetune_operator.reconcile.policies import phase
from kubetune_operator.reconcile.timeutil import format_time
from tests.unit.operator.helpers import T0, at, condition, gang, job, outcome, pod

pytestmark = pytest.mark.unit


def status(old: str, attempt: int = 1) -> dict:
    return {"phase": old, "attempt": attempt, "restarts": attempt - 1, "startTime": format_time(T0)}


@pytest.mark.parametrize(
    ("old", "attempt", "pods", "new", "events", "running"),
    [
        ("Pending", 1, [pod(0, phase="Pending", scheduled=False)], "Pending", [], "False"),
        ("Pending", 1, [pod(i, phase="Pending") for i in range(2)], "Initializing", ["Initializing"], "False"),
        ("Initializing", 1, gang("Running"), "Running", ["Running"], "True"),
        ("Running", 1, [pod(0, phase="Succeeded"), pod(1)], "Running", [], "True"),
        ("Pending", 1, [pod(0, phase="Pending", waiting="ImagePullBackOff"), pod(1, phase="Pending")],
         "Pending", ["WorkerProblem"], "False"),
        ("Restarting", 2, [pod(0, attempt=2, phase="Pending", scheduled=False)], "Restarting", [], "False"),
        ("Running", 2, [pod(0, attempt=2, phase="Pending", scheduled=False)], "Pending", ["Pending"], "False"),
    ],
    ids=["unscheduled", "scheduled", "all-running", "running-or-done", "worker-problem",
         "restarting", "pending-again"],
)  # fmt: skip
def test_phase(old: str, attempt: int, pods: list, new: str, events: list, running: str) -> None:
    got = outcome(phase.step, job(), status(old, attempt), pods, at(5))
    assert got["ended"] is True
    assert (got["phase"], got["events"]) == (new, events)
    assert condition(got["status"], "Running")[0] == running
