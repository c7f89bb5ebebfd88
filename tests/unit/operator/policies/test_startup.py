"""policies.startup: a worker that cannot start its container is reported after
startupErrorTimeout (once: condition, lastFailure, Warning), the condition clears when it
starts, and failOnStartupError ends the attempt."""

from __future__ import annotations

import pytest

from kubetune_operator.reconcile.policies import startup
from tests.unit.operator.helpers import at, condition, outcome, pod, with_run_policy

pytestmark = pytest.mark.unit

PENDING = {"phase": "Pending", "attempt": 1, "restarts": 0, "startTime": "2026-01-01T12:00:00Z"}
STUCK = [pod(0, phase="Pending", waiting="ImagePullBackOff"), pod(1, phase="Pending")]
REPORTED = {
    **PENDING,
    "conditions": [{"type": "StartupError", "status": "True", "reason": "ImagePullError"}],
}


@pytest.mark.parametrize(
    ("policy", "status", "pods", "now", "expected", "cond"),
    [
        ({}, PENDING, STUCK, at(60), {"ended": False, "requeue": 240.0, "events": []}, None),
        ({}, PENDING, STUCK, at(300), {"ended": False, "events": ["ImagePullError"]}, ("True", "ImagePullError")),
        ({}, REPORTED, STUCK, at(400), {"ended": False, "events": []}, ("True", "ImagePullError")),
        ({}, REPORTED, [pod(0, phase="Pending"), pod(1, phase="Pending")], at(400), {"events": []}, ("False", "Started")),
        ({"failOnStartupError": True}, PENDING, STUCK, at(300),
         {"ended": True, "phase": "Restarting", "events": ["ImagePullError", "ImagePullError"]}, ("True", "ImagePullError")),
    ],
    ids=["within-timeout", "reported", "reported-once", "cleared", "fail-on-startup-error"],
)  # fmt: skip
def test_startup(
    policy: dict, status: dict, pods: list, now: object, expected: dict, cond: tuple | None
) -> None:
    got = outcome(startup.step, with_run_policy(**policy), status, pods, now)
    assert {k: got[k] for k in expected} == expected
    assert condition(got["status"], "StartupError") == cond


def test_the_report_names_the_worker_and_the_problem() -> None:
    got = outcome(startup.step, with_run_policy(), PENDING, STUCK, at(300))
    last = got["status"]["lastFailure"]
    assert (last["reason"], last["pod"]) == ("ImagePullError", "llama-lora-a1-0")
    assert (
        last["message"]
        == "worker llama-lora-a1-0 could not start for 5m: ImagePullBackOff: image not found"
    )


@pytest.mark.parametrize(
    ("waiting", "reason"),
    [
        ("ErrImagePull", "ImagePullError"),
        ("ImagePullBackOff", "ImagePullError"),
        ("InvalidImageName", "ImagePullError"),
        ("ErrImageNeverPull", "ImagePullError"),
        ("ErrImageInspect", "ImagePullError"),
        ("RegistryUnavailable", "ImagePullError"),
        ("SignatureValidationFailed", "ImagePullError"),
        ("CreateContainerConfigError", "ContainerConfigError"),
        ("CreateContainerError", "ContainerConfigError"),
        ("ContainerCreating", None),
        ("PodInitializing", None),
    ],
)
def test_every_kubelet_reason_for_a_container_that_cannot_start(
    waiting: str, reason: str | None
) -> None:
    """From the pod the kubelet reports to the job's status: imagePullPolicy Never with an
    image the node lacks waits as ErrImageNeverPull, as stuck as a failed pull; a container
    still being created is no error."""
    pods = [pod(0, phase="Pending", waiting=waiting), pod(1, phase="Pending")]
    got = outcome(startup.step, with_run_policy(), PENDING, pods, at(300))
    assert (got["status"].get("lastFailure") or {}).get("reason") == reason
    assert condition(got["status"], "StartupError") == (reason and ("True", reason))
