"""policies.deadline: activeDeadlineSeconds from the start or the latest resume."""

from __future__ import annotations

import pytest

from kubetune_operator.reconcile.policies import deadline
from kubetune_operator.reconcile.timeutil import format_time
from tests.unit.operator.helpers import at, gang, outcome, running_status, with_run_policy

pytestmark = pytest.mark.unit

RESUMED_AT_100 = running_status(
    conditions=[
        {"type": "Suspended", "status": "False", "lastTransitionTime": format_time(at(100))}
    ]
)


@pytest.mark.parametrize(
    ("limit", "status", "now", "expected"),
    [
        (None, running_status(), at(10**6), {"ended": False, "requeue": None}),
        (60, running_status(), at(20), {"ended": False, "requeue": 40.0}),
        (60, running_status(), at(60), {"ended": True, "phase": "Failed", "deleted": ["llama-lora-a1-0", "llama-lora-a1-1"]}),
        (60, {}, at(60), {"ended": False, "requeue": None}),
        (60, RESUMED_AT_100, at(150), {"ended": False, "requeue": 10.0}),
        (60, RESUMED_AT_100, at(161), {"ended": True, "phase": "Failed"}),
    ],
    ids=["none", "watching", "exceeded", "not-started", "since-resume", "exceeded-since-resume"],
)  # fmt: skip
def test_deadline(limit: int | None, status: dict, now: object, expected: dict) -> None:
    got = outcome(deadline.step, with_run_policy(activeDeadlineSeconds=limit), status, gang(), now)
    assert {k: got[k] for k in expected} == expected
    if expected.get("phase") == "Failed":
        assert got["status"]["lastFailure"]["reason"] == "DeadlineExceeded"


@pytest.mark.parametrize(
    ("status", "requeue", "start"),
    [({}, 600.0, format_time(at(5))), (running_status(), None, format_time(at(0)))],
    ids=["first-start", "started-before"],
)
def test_the_first_start_sets_start_time_and_arms_the_deadline(
    status: dict, requeue: float | None, start: str
) -> None:
    got = outcome(
        deadline.start_clock, with_run_policy(activeDeadlineSeconds=600), status, [], at(5)
    )
    assert got["ended"] is False
    assert (got["status"]["startTime"], got["requeue"]) == (start, requeue)
