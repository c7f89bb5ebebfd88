"""policies.success: the attempt's worker counts; all workers exited 0 is success."""

from __future__ import annotations

import pytest

from kubetune_operator.reconcile.policies import success
from tests.unit.operator.helpers import at, condition, gang, job, outcome, pod, running_status

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("pods", "expected"),
    [
        (gang("Running"), {"ended": False, "phase": "Running", "deleted": []}),
        ([pod(0, phase="Succeeded"), pod(1)], {"ended": False, "phase": "Running", "deleted": []}),
        (gang("Succeeded"), {"ended": True, "phase": "Succeeded", "events": ["Succeeded"],
                             "deleted": ["llama-lora-a1-0", "llama-lora-a1-1"]}),
    ],
    ids=["running", "one-done", "all-done"],
)  # fmt: skip
def test_success(pods: list, expected: dict) -> None:
    got = outcome(success.step, job(), running_status(), pods, at(60))
    assert {k: got[k] for k in expected} == expected
    assert got["status"]["workers"]["succeeded"] == sum(
        p["status"]["phase"] == "Succeeded" for p in pods
    )
    if got["ended"]:
        assert got["status"]["output"] == {"uri": "s3://models/llama-lora"}
        assert condition(got["status"], "Succeeded") == ("True", "Succeeded")
