"""policies.stall: a Running attempt whose progress is older than stallTimeout fails (Stalled)."""

from __future__ import annotations

import pytest

from kubetune_operator.reconcile.classify import WorkerFailure
from kubetune_operator.reconcile.policies import stall
from kubetune_operator.reconcile.timeutil import format_time
from tests.unit.operator.helpers import at, gang, outcome, running_status, with_run_policy

pytestmark = pytest.mark.unit

AT_10 = {"step": 5, "updatedAt": format_time(at(10))}
OTHER = WorkerFailure("Error", "x", 1, "llama-lora-a1-0")


@pytest.mark.parametrize(
    ("status", "failure", "now", "requeue", "reason"),
    [
        (running_status(progress=AT_10), None, at(39), 1.0, None),
        (running_status(progress=AT_10), None, at(41), None, "Stalled"),
        (running_status(), None, at(10**6), None, None),
        (running_status(progress={**AT_10, "step": 0}), None, at(10**6), None, None),
        (running_status(phase="Initializing", progress=AT_10), None, at(10**6), None, None),
        (running_status(progress=AT_10), OTHER, at(41), None, "Error"),
    ],
    ids=["watching", "stalled", "no-progress", "before-first-step", "not-running", "failed-already"],
)  # fmt: skip
def test_stall(
    status: dict,
    failure: WorkerFailure | None,
    now: object,
    requeue: float | None,
    reason: str | None,
) -> None:
    got = outcome(
        stall.step, with_run_policy(stallTimeout="30s"), status, gang(), now, failure=failure
    )
    assert got["ended"] is False and got["requeue"] == requeue
    assert (got["failure"].reason if got["failure"] else None) == reason
    if reason == "Stalled":
        assert got["failure"].message == "no progress for 30s (stuck at step 5)"
