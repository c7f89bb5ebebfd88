"""Failure classification of worker pods."""

from __future__ import annotations

import pytest

from kubetune_operator.reconcile.classify import classify_exit, classify_pod
from tests.unit.operator.helpers import pod

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("kwargs", "expected_reason", "expected_code"),
    [
        ({"exit_code": 137, "reason": "OOMKilled"}, "OOMKilled", 137),
        ({"exit_code": 1, "reason": "Error"}, "Error", 1),
        ({"exit_code": 43, "reason": "Error"}, "Preempted", 43),
        ({"exit_code": 143, "reason": "Error"}, "Error", 143),
        ({"exit_code": 44, "reason": "Error"}, "InvalidSpec", 44),
        ({"exit_code": 45, "reason": "Error"}, "GPUOutOfMemory", 45),
        ({"pod_reason": "Evicted"}, "Evicted", None),
        ({"pod_reason": "NodeLost"}, "NodeLost", None),
        ({"disruption": "PreemptionByScheduler", "exit_code": 143}, "Preempted", 143),
        ({"disruption": "DeletionByTaintManager"}, "NodeLost", None),
        ({"disruption": "EvictionByEvictionAPI"}, "Evicted", None),
    ],
)
def test_failed_pod_is_classified(
    kwargs: dict, expected_reason: str, expected_code: int | None
) -> None:
    failure = classify_pod(pod(0, phase="Failed", **kwargs))
    assert failure is not None
    assert failure.reason == expected_reason
    assert failure.exit_code == expected_code
    assert failure.pod == "llama-lora-a1-0"
    assert "llama-lora-a1-0" in failure.message


@pytest.mark.parametrize("phase", ["Pending", "Running", "Succeeded"])
def test_pods_that_did_not_fail_have_no_failure(phase: str) -> None:
    assert classify_pod(pod(0, phase=phase)) is None


@pytest.mark.parametrize(
    ("code", "reason", "expected"),
    [
        (137, "OOMKilled", "OOMKilled"),
        (43, None, "Preempted"),
        (2, None, "Error"),
        (None, None, "Error"),
    ],
)
def test_classify_exit(code: int | None, reason: str | None, expected: str) -> None:
    assert classify_exit(code, reason) == expected
