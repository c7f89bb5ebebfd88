"""policies.suspend: suspended jobs lose their workers and say whether progress is kept;
a resumed job starts the next attempt (only if one ran before) and the pass goes on."""

from __future__ import annotations

import pytest

from kubetune_operator.api.spec import FineTuneJob
from kubetune_operator.reconcile.policies import suspend
from tests.unit.operator.helpers import (
    T0,
    at,
    condition,
    gang,
    manifest,
    outcome,
    pod,
    running_status,
    with_run_policy,
)

pytestmark = pytest.mark.unit


def no_checkpoint(suspended: bool) -> FineTuneJob:
    doc = manifest()
    del doc["spec"]["checkpoint"]
    doc["spec"]["runPolicy"] = {"suspend": suspended}
    return FineTuneJob.model_validate(doc)


ON, OFF = with_run_policy(suspend=True), with_run_policy(suspend=False)
SUSPENDED = running_status(phase="Suspended")


@pytest.mark.parametrize(
    ("job_", "status", "pods", "expected"),
    [
        (OFF, running_status(), gang(), {"ended": False, "phase": "Running", "deleted": [], "events": []}),
        (ON, running_status(), [pod(0), pod(1, deleting=True)],
         {"ended": True, "phase": "Suspended", "deleted": ["llama-lora-a1-0"], "events": ["Suspended"]}),
        (no_checkpoint(True), running_status(), gang(),
         {"ended": True, "phase": "Suspended", "events": ["SuspendedWithoutCheckpoint"]}),
        (no_checkpoint(True), {}, [], {"ended": True, "phase": "Suspended", "events": ["Suspended"]}),
        (OFF, SUSPENDED, [], {"ended": False, "phase": "Suspended", "events": ["Resumed"]}),
    ],
    ids=["not-suspended", "suspend", "without-checkpoint", "before-start", "resume"],
)  # fmt: skip
def test_suspend(job_: FineTuneJob, status: dict, pods: list, expected: dict) -> None:
    got = outcome(suspend.step, job_, status, pods, at(30))
    assert {k: got[k] for k in expected} == expected


@pytest.mark.parametrize(("status", "attempt"), [(SUSPENDED, 2), ({"phase": "Suspended"}, 1)])
def test_resume_starts_the_next_attempt_only_after_one_ran(status: dict, attempt: int) -> None:
    got = outcome(suspend.step, OFF, status, [], T0)
    assert got["status"]["attempt"] == attempt
    assert condition(got["status"], "Suspended") == ("False", "Resumed")
