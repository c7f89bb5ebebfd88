"""policies.backoff: a failure ends the attempt; the next one starts within backoffLimit
(preemptions within preemptionLimit), else the job fails; some failures are never retried."""

from __future__ import annotations

import pytest

from kubetune_operator.reconcile.classify import WorkerFailure
from kubetune_operator.reconcile.policies import backoff
from tests.unit.operator.helpers import (
    at,
    condition,
    gang,
    outcome,
    running_status,
    with_run_policy,
)

pytestmark = pytest.mark.unit


def failure(reason: str) -> WorkerFailure:
    return WorkerFailure(reason, f"worker failed: {reason}", 1, "llama-lora-a1-1")


BOTH = ["llama-lora-a1-0", "llama-lora-a1-1"]


@pytest.mark.parametrize(
    ("policy", "status", "reason", "expected", "cond"),
    [
        ({}, running_status(), None, {"ended": False, "phase": "Running"}, None),
        ({"backoffLimit": 2}, running_status(), "Error",
         {"ended": True, "phase": "Restarting", "deleted": BOTH, "requeue": 1.0}, ("Restarting", "Error")),
        ({"backoffLimit": 2}, running_status(restarts=2), "Error",
         {"ended": True, "phase": "Failed", "deleted": BOTH}, ("Failed", "BackoffLimitExceeded")),
        ({"backoffLimit": 0}, running_status(), "Preempted",
         {"ended": True, "phase": "Restarting"}, ("Restarting", "Preempted")),
        ({"preemptionLimit": 1}, running_status(restarts=1, preemptions=1), "Evicted",
         {"ended": True, "phase": "Failed"}, ("Failed", "PreemptionLimitExceeded")),
        ({"backoffLimit": 5}, running_status(), "GPUOutOfMemory",
         {"ended": True, "phase": "Failed"}, ("Failed", "GPUOutOfMemory")),
        ({"backoffLimit": 5}, running_status(), "InvalidSpec",
         {"ended": True, "phase": "Failed"}, ("Failed", "InvalidSpec")),
    ],
    ids=["no-failure", "restart", "backoff-used-up", "preemption-not-counted", "preemptions-used-up",
         "gpu-oom-not-retried", "bad-input-not-retried"],
)  # fmt: skip
def test_backoff(
    policy: dict, status: dict, reason: str | None, expected: dict, cond: tuple | None
) -> None:
    got = outcome(backoff.step, with_run_policy(**policy), status, gang(), at(60),
                  failure=failure(reason) if reason else None)  # fmt: skip
    assert {k: got[k] for k in expected} == expected
    if cond:
        assert condition(got["status"], cond[0]) == ("True", cond[1])
        assert got["status"]["lastFailure"]["reason"] == reason
        assert got["events"] == [cond[1]]


def test_restart_counts_preemptions_apart() -> None:
    got = outcome(backoff.step, with_run_policy(), running_status(), gang(), at(60),
                  failure=failure("Preempted"))  # fmt: skip
    st = got["status"]
    assert (st["attempt"], st["restarts"], st["preemptions"]) == (2, 1, 1)
    assert got["decision"].restart_reason == "Preempted"
