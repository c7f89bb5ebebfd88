"""The reconcile decision for attempts ended from outside and workers that cannot start:
preemptions spend their own budget (not backoffLimit), a container that cannot start is
reported after startupErrorTimeout (and failed when asked), a suspend without a checkpoint
says that nothing is saved."""

from __future__ import annotations

from typing import Any

import pytest

from kubetune_operator.api.spec import FineTuneJob
from kubetune_operator.reconcile.plan import DefaultCheckpointStore, OperatorSettings
from kubetune_operator.reconcile.status import decide
from kubetune_operator.reconcile.timeutil import format_time
from tests.unit.operator.helpers import T0, at, gang, manifest, pod, running_status

pytestmark = pytest.mark.unit


def cond(status: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions", []) if c["type"] == kind), None)


def job_with(**policy: Any) -> FineTuneJob:
    doc = manifest()
    doc["spec"]["runPolicy"] = {**doc["spec"].get("runPolicy", {}), **policy}
    return FineTuneJob.model_validate(doc)


def preempted_gang(attempt: int, how: str) -> list[dict[str, Any]]:
    """The gang of `attempt` stopped from outside: the trainer's exit 43 after its checkpoint,
    or Kueue / the scheduler deleting the pods with a DisruptionTarget condition."""
    if how == "exit43":
        return [pod(i, attempt, "Failed", exit_code=43) for i in range(2)]
    return [
        pod(i, attempt, "Running", deleting=True, disruption="PreemptionByScheduler")
        for i in range(2)
    ]


@pytest.mark.parametrize("how", ["exit43", "disruption"])
def test_preemptions_beyond_backoff_limit_keep_resuming(how: str) -> None:
    job = job_with(backoffLimit=1)
    st = running_status()
    for n in range(1, 6):  # five preemptions with backoffLimit 1
        d = decide(job, st, preempted_gang(n, how), at(100 * n))
        assert d.status["phase"] == "Restarting", d.status["message"]
        assert d.status["lastFailure"]["reason"] == "Preempted"
        assert cond(d.status, "Restarting")["reason"] == "Preempted"
        assert d.status["attempt"] == n + 1
        assert d.status["preemptions"] == n and d.status["restarts"] == n
        st = {**d.status, "phase": "Running"}
    # backoffLimit still allows one real failure ...
    d = decide(job, st, [pod(0, 6), pod(1, 6, "Failed", exit_code=1)], at(700))
    assert d.status["phase"] == "Restarting" and d.status["attempt"] == 7
    # ... and only one
    st = {**d.status, "phase": "Running"}
    d = decide(job, st, [pod(0, 7), pod(1, 7, "Failed", exit_code=1)], at(800))
    assert d.status["phase"] == "Failed"
    assert cond(d.status, "Failed")["reason"] == "BackoffLimitExceeded"


def test_preemption_limit_bounds_preemptions() -> None:
    job = job_with(backoffLimit=5, preemptionLimit=2)
    st = running_status(attempt=3, restarts=2, preemptions=2)
    d = decide(job, st, preempted_gang(3, "exit43"), at(300))
    assert d.status["phase"] == "Failed"
    assert cond(d.status, "Failed")["reason"] == "PreemptionLimitExceeded"
    assert "preemptionLimit=2" in d.status["message"]
    assert d.status["lastFailure"]["reason"] == "Preempted"


def test_eviction_counts_as_a_preemption() -> None:
    job = job_with(backoffLimit=0)
    d = decide(
        job, running_status(), [pod(0), pod(1, phase="Failed", pod_reason="Evicted")], at(60)
    )
    assert d.status["phase"] == "Restarting"
    assert d.status["preemptions"] == 1


def stuck(
    index: int, waiting: str, scheduled_at: float | None = None, attempt: int = 1
) -> dict[str, Any]:
    p = pod(index, attempt, "Pending", waiting=waiting)
    if scheduled_at is not None:
        for c in p["status"]["conditions"]:
            if c["type"] == "PodScheduled":
                c["lastTransitionTime"] = format_time(at(scheduled_at))
    return p


def pending_status() -> dict[str, Any]:
    return {"phase": "Pending", "attempt": 1, "restarts": 0, "startTime": format_time(T0)}


@pytest.mark.parametrize(
    ("waiting", "reason"),
    [
        ("ImagePullBackOff", "ImagePullError"),
        ("ErrImagePull", "ImagePullError"),
        ("CreateContainerConfigError", "ContainerConfigError"),
    ],
)
def test_worker_that_cannot_start_is_reported_after_the_timeout(waiting: str, reason: str) -> None:
    job = job_with(startupErrorTimeout="5m")
    pods = [stuck(0, waiting), pod(1, phase="Pending")]
    early = decide(job, pending_status(), pods, at(60))
    assert cond(early.status, "StartupError") is None
    assert "lastFailure" not in early.status
    assert early.requeue_after == pytest.approx(240)  # looks again when the timeout runs out

    d = decide(job, early.status, pods, at(301))
    c = cond(d.status, "StartupError")
    assert c is not None and c["status"] == "True" and c["reason"] == reason
    assert d.status["lastFailure"]["reason"] == reason
    assert d.status["lastFailure"]["pod"] == "llama-lora-a1-0"
    assert waiting in d.status["lastFailure"]["message"]
    assert [e.reason for e in d.events if e.type == "Warning"].count(reason) == 1
    assert d.status["phase"] == "Pending" and d.status["attempt"] == 1  # still waiting

    again = decide(job, d.status, pods, at(331))
    assert reason not in [e.reason for e in again.events]  # said once

    fixed = decide(job, again.status, gang("Running"), at(400))
    assert cond(fixed.status, "StartupError")["status"] == "False"
    assert fixed.status["phase"] == "Running"


def test_startup_timeout_counts_from_scheduling_not_from_creation() -> None:
    job = job_with(startupErrorTimeout="5m")
    pods = [stuck(0, "ImagePullBackOff", scheduled_at=250), pod(1, phase="Pending")]
    d = decide(job, pending_status(), pods, at(400))  # created 400 s ago, scheduled 150 s ago
    assert cond(d.status, "StartupError") is None
    assert d.requeue_after == pytest.approx(150)


def test_fail_on_startup_error_ends_the_attempt() -> None:
    job = job_with(startupErrorTimeout="2m", failOnStartupError=True, backoffLimit=1)
    pods = [stuck(0, "CreateContainerConfigError"), stuck(1, "CreateContainerConfigError")]
    d = decide(job, pending_status(), pods, at(121))
    assert d.status["phase"] == "Restarting"
    assert d.status["lastFailure"]["reason"] == "ContainerConfigError"
    assert d.status["attempt"] == 2 and d.status["restarts"] == 1
    assert sorted(d.delete_pods) == ["llama-lora-a1-0", "llama-lora-a1-1"]
    st = {**d.status}
    pods2 = [stuck(i, "CreateContainerConfigError", attempt=2) for i in range(2)]
    for p in pods2:
        p["metadata"]["creationTimestamp"] = format_time(at(130))
    d = decide(job, st, pods2, at(260))
    assert d.status["phase"] == "Failed"
    assert cond(d.status, "Failed")["reason"] == "BackoffLimitExceeded"


def without_checkpoint(**policy: Any) -> FineTuneJob:
    doc = manifest()
    del doc["spec"]["checkpoint"]
    doc["spec"]["runPolicy"] = {**doc["spec"].get("runPolicy", {}), **policy}
    return FineTuneJob.model_validate(doc)


def test_suspend_without_checkpoint_says_progress_is_lost() -> None:
    d = decide(without_checkpoint(suspend=True), running_status(), gang("Running"), at(30))
    assert d.status["phase"] == "Suspended"
    assert "without saving a checkpoint" in d.status["message"]
    assert "step 0" in d.status["message"]
    assert cond(d.status, "Suspended")["reason"] == "SuspendedWithoutCheckpoint"
    assert [(e.type, e.reason) for e in d.events] == [("Warning", "SuspendedWithoutCheckpoint")]


def test_suspend_with_checkpoint_promises_a_resume() -> None:
    d = decide(job_with(suspend=True), running_status(), gang("Running"), at(30))
    assert cond(d.status, "Suspended")["reason"] == "Suspended"
    assert "without" not in d.status["message"]


def test_suspend_without_checkpoint_saves_to_the_operators_default_store() -> None:
    """With a default checkpoint store the suspend saves there: no warning, a resume promised."""
    job = without_checkpoint(suspend=True)
    store = DefaultCheckpointStore("s3://platform-checkpoints/kubetune")
    settings = OperatorSettings(default_checkpoint=store)
    d = decide(job, running_status(), gang("Running"), at(30), settings=settings)
    assert cond(d.status, "Suspended")["reason"] == "Suspended"
    assert "without" not in d.status["message"]
    assert [(e.type, e.reason) for e in d.events] == [("Normal", "Suspended")]
