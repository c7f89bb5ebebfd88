"""The reconcile decision, scenario by scenario: (job, status, pods, clock) -> Decision."""

from __future__ import annotations

from typing import Any

import pytest

from kubetune_operator.reconcile.decision import Decision, Event, Upstream
from kubetune_operator.reconcile.status import can_coalesce, decide, status_patch
from kubetune_operator.reconcile.timeutil import format_time
from tests.unit.operator.helpers import T0, at, gang, job, pod, running_status, with_run_policy

pytestmark = pytest.mark.unit


def cond(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == kind)


def test_new_job_starts_attempt_one() -> None:
    d = decide(job(), {}, [], T0)
    assert d.start_attempt == 1
    assert d.status["phase"] == "Pending"
    assert d.status["attempt"] == 1 and d.status["restarts"] == 0
    assert d.status["startTime"] == format_time(T0)
    assert d.status["observedGeneration"] == 1
    assert cond(d.status, "Created")["status"] == "True"
    assert d.delete_pods == []


@pytest.mark.parametrize(
    ("pods", "phase", "start"),
    [
        ([pod(0, phase="Pending", scheduled=False)], "Pending", 1),  # one still missing
        ([pod(i, phase="Pending", scheduled=False) for i in range(2)], "Pending", None),
        ([pod(i, phase="Pending") for i in range(2)], "Initializing", None),
        ([pod(0), pod(1, phase="Pending")], "Initializing", None),
        (gang("Running"), "Running", None),
        (
            [pod(0, phase="Pending", waiting="ImagePullBackOff"), pod(1, phase="Pending")],
            "Pending",
            None,
        ),
    ],
)
def test_phase_follows_the_workers(pods: list[dict], phase: str, start: int | None) -> None:
    st = {"phase": "Pending", "attempt": 1, "restarts": 0, "startTime": format_time(T0)}
    d = decide(job(), st, pods, at(5))
    assert d.status["phase"] == phase
    assert d.start_attempt == start
    assert d.status["workers"]["total"] == 2


def test_image_problem_is_named_in_the_message() -> None:
    st = {"phase": "Pending", "attempt": 1, "restarts": 0, "startTime": format_time(T0)}
    d = decide(
        job(),
        st,
        [pod(0, phase="Pending", waiting="ImagePullBackOff"), pod(1, phase="Pending")],
        at(5),
    )
    assert "llama-lora-a1-0: ImagePullBackOff" in d.status["message"]


def test_running_sets_condition_and_event() -> None:
    st = {"phase": "Initializing", "attempt": 1, "restarts": 0, "startTime": format_time(T0)}
    d = decide(job(), st, gang("Running"), at(5))
    assert cond(d.status, "Running")["status"] == "True"
    assert [e.reason for e in d.events] == ["Running"]


def test_all_workers_succeeded_is_success() -> None:
    d = decide(job(), running_status(), gang("Succeeded"), at(60))
    assert d.status["phase"] == "Succeeded"
    assert d.status["completionTime"] == format_time(at(60))
    assert d.status["output"] == {"uri": "s3://models/llama-lora"}
    assert cond(d.status, "Succeeded")["status"] == "True"
    assert sorted(d.delete_pods) == ["llama-lora-a1-0", "llama-lora-a1-1"]  # cleanPodPolicy All


def test_early_stop_is_announced_and_the_output_names_the_exported_step() -> None:
    """The trainer's last report says training stopped early at step 60 of 500 and exported
    step 40; the job succeeds saying so, in its message, condition and event."""
    progress = {"step": 60, "totalSteps": 500, "percent": 100, "stoppedEarly": True,
                "bestStep": 40, "exportedStep": 40, "attempt": 1}  # fmt: skip
    d = decide(job(), {**running_status(), "progress": progress}, gang("Succeeded"), at(60))
    assert d.status["phase"] == "Succeeded"
    assert d.status["output"] == {"uri": "s3://models/llama-lora", "step": 40}
    assert cond(d.status, "Succeeded")["reason"] == "StoppedEarly"
    (event,) = d.events
    assert (event.type, event.reason) == ("Normal", "StoppedEarly")
    assert "stopped early at step 60 of 500" in event.message
    assert "the output holds the best weights, step 40" in d.status["message"]


def test_a_full_run_names_its_last_step_as_exported() -> None:
    progress = {"step": 500, "totalSteps": 500, "exportedStep": 500}
    d = decide(job(), {**running_status(), "progress": progress}, gang("Succeeded"), at(60))
    assert d.status["output"] == {"uri": "s3://models/llama-lora", "step": 500}
    assert cond(d.status, "Succeeded")["reason"] == "Succeeded"


def test_one_success_is_not_yet_success() -> None:
    d = decide(job(), running_status(), [pod(0, phase="Succeeded"), pod(1)], at(60))
    assert d.status["phase"] == "Running"


@pytest.mark.parametrize(
    ("failed_pod", "reason"),
    [
        (pod(1, phase="Failed", exit_code=137, reason="OOMKilled"), "OOMKilled"),
        (pod(1, phase="Failed", exit_code=1), "Error"),
        (pod(1, phase="Failed", pod_reason="Evicted"), "Evicted"),
        (pod(1, phase="Failed", exit_code=43), "Preempted"),
    ],
)
def test_a_worker_failure_restarts_the_gang(failed_pod: dict, reason: str) -> None:
    d = decide(job(), running_status(), [pod(0), failed_pod], at(60))
    assert d.status["attempt"] == 2
    assert d.status["restarts"] == 1
    assert d.status["phase"] == "Restarting"
    assert d.status["lastFailure"]["reason"] == reason
    assert d.status["lastFailure"]["pod"] == "llama-lora-a1-1"
    assert d.status["lastFailure"]["attempt"] == 1
    assert sorted(d.delete_pods) == ["llama-lora-a1-0", "llama-lora-a1-1"]
    assert d.start_attempt is None  # the new gang waits until the old one is gone
    assert d.restart_reason == reason
    assert cond(d.status, "Restarting")["status"] == "True"


def test_worker_deleted_while_running_is_node_lost() -> None:
    d = decide(job(), running_status(), [pod(0)], at(60))
    assert d.status["lastFailure"]["reason"] == "NodeLost"
    assert d.status["attempt"] == 2


def test_worker_preempted_while_running() -> None:
    d = decide(
        job(),
        running_status(),
        [pod(0), pod(1, deleting=True, disruption="PreemptionByScheduler")],
        at(60),
    )
    assert d.status["lastFailure"]["reason"] == "Preempted"


def test_new_attempt_waits_for_old_pods_then_starts() -> None:
    st = running_status(attempt=2, restarts=1, phase="Restarting")
    old = [pod(0, attempt=1), pod(1, attempt=1, phase="Failed", exit_code=1)]
    d = decide(job(), st, old, at(61))
    assert d.start_attempt is None
    assert d.delete_pods == ["llama-lora-a1-0"]  # the failed one holds nothing but is kept
    d = decide(job(), st, [pod(1, attempt=1, phase="Failed", exit_code=1)], at(62))
    assert d.start_attempt == 2


def test_backoff_limit_exhausted_fails_the_job() -> None:
    st = running_status(attempt=3, restarts=2)
    d = decide(
        job(), st, [pod(0, attempt=3), pod(1, attempt=3, phase="Failed", exit_code=1)], at(90)
    )
    assert d.status["phase"] == "Failed"
    assert d.status["attempt"] == 3
    assert cond(d.status, "Failed")["reason"] == "BackoffLimitExceeded"
    assert d.status["lastFailure"]["reason"] == "Error"
    assert d.start_attempt is None
    assert sorted(d.delete_pods) == ["llama-lora-a3-0", "llama-lora-a3-1"]


def test_suspend_deletes_workers() -> None:
    d = decide(with_run_policy(suspend=True), running_status(), gang("Running"), at(30))
    assert d.status["phase"] == "Suspended"
    assert sorted(d.delete_pods) == ["llama-lora-a1-0", "llama-lora-a1-1"]
    assert cond(d.status, "Suspended")["status"] == "True"
    assert d.start_attempt is None


def test_resume_starts_a_new_attempt() -> None:
    st = running_status(phase="Suspended")
    d = decide(with_run_policy(suspend=False), st, [], at(30))
    assert d.status["attempt"] == 2
    assert d.status["restarts"] == 0  # a resume is not a failure
    assert d.start_attempt == 2
    assert cond(d.status, "Suspended")["status"] == "False"
    assert "Resumed" in [e.reason for e in d.events]


def test_deadline_exceeded_fails_the_job() -> None:
    d = decide(with_run_policy(activeDeadlineSeconds=60), running_status(), gang(), at(61))
    assert d.status["phase"] == "Failed"
    assert d.status["lastFailure"]["reason"] == "DeadlineExceeded"
    assert sorted(d.delete_pods) == ["llama-lora-a1-0", "llama-lora-a1-1"]


def test_deadline_is_watched() -> None:
    d = decide(with_run_policy(activeDeadlineSeconds=60), running_status(), gang(), at(20))
    assert d.requeue_after == pytest.approx(40)


def test_stalled_attempt_is_restarted() -> None:
    progress = {"step": 5, "updatedAt": format_time(at(10))}
    st = running_status(progress=progress)
    d = decide(with_run_policy(stallTimeout="30s"), st, gang(), at(39))
    assert d.status["phase"] == "Running" and d.requeue_after == pytest.approx(1)
    d = decide(with_run_policy(stallTimeout="30s"), st, gang(), at(41))
    assert d.status["lastFailure"]["reason"] == "Stalled"
    assert d.status["attempt"] == 2
    assert "progress" not in d.status  # the trainer owns progress


def test_ttl_deletes_finished_job() -> None:
    st = {"phase": "Succeeded", "attempt": 1, "completionTime": format_time(T0)}
    assert decide(
        with_run_policy(ttlSecondsAfterFinished=100), st, [], at(50)
    ).requeue_after == pytest.approx(50)
    assert decide(with_run_policy(ttlSecondsAfterFinished=100), st, [], at(100)).delete_job


def test_upstream_job_must_succeed_first() -> None:
    src = {"source": "ftj://base-job"}
    d = decide(job(model=src), {}, [], T0, Upstream("base-job", "Running", None))
    assert d.status["phase"] == "Pending"
    assert "base-job" in d.status["message"]
    assert d.start_attempt is None
    d = decide(job(model=src), {}, [], T0, Upstream("base-job", "Succeeded", "s3://models/base"))
    assert d.start_attempt == 1


@pytest.mark.parametrize(
    ("st", "pods"),
    [
        ({}, []),
        (running_status(), gang("Running")),
        (running_status(), [pod(0), pod(1, phase="Failed", exit_code=1)]),
        (running_status(), gang("Succeeded")),
        (running_status(phase="Suspended"), []),
    ],
)
def test_decisions_reach_a_fixed_point(st: dict, pods: list[dict]) -> None:
    """Applying each decision (status written, pods deleted) converges: then no more writes."""
    patches = 0
    for step in range(4):
        d = decide(job(), st, pods, at(70 + step))
        patch = status_patch(st, d.status)
        if patch is None:
            assert d.events == []
            break
        patches += 1
        st = {**st, **d.status}
        pods = [p for p in pods if p["metadata"]["name"] not in d.delete_pods]
    else:
        pytest.fail("status never settled")
    assert 1 <= patches <= 2


def test_bad_input_fails_without_retry() -> None:
    d = decide(job(), running_status(), [pod(0), pod(1, phase="Failed", exit_code=44)], at(60))
    assert d.status["phase"] == "Failed"
    assert d.status["attempt"] == 1
    assert cond(d.status, "Failed")["reason"] == "InvalidSpec"


def test_gpu_out_of_memory_fails_without_retry_even_when_a_peer_failed_first() -> None:
    """Worker 1's rank ran out of GPU memory (45); worker 0 lost its peer and exited 1."""
    pods = [pod(0, phase="Failed", exit_code=1), pod(1, phase="Failed", exit_code=45)]
    d = decide(job(), running_status(), pods, at(60))
    assert d.status["phase"] == "Failed" and d.status["attempt"] == 1
    assert cond(d.status, "Failed")["reason"] == "GPUOutOfMemory"
    assert cond(d.status, "Failed")["message"].startswith("not retried: worker llama-lora-a1-1")
    assert d.status["lastFailure"]["reason"] == "GPUOutOfMemory"
    assert d.status["lastFailure"]["exitCode"] == 45


def test_a_plain_error_waits_for_a_peer_that_still_runs() -> None:
    """Worker 0 exits 1 at t=50 while worker 1 runs: the attempt ends only if nothing more
    specific arrives within the grace, and at once when it does."""
    failed = pod(0, phase="Failed", exit_code=1, finished=50)
    d = decide(job(), running_status(), [failed, pod(1)], at(53))
    assert d.status["phase"] == "Running" and not d.delete_pods and not d.events
    assert d.requeue_after == pytest.approx(7.0)

    d = decide(job(), running_status(), [failed, pod(1)], at(61))
    assert d.status["phase"] == "Restarting" and d.status["lastFailure"]["reason"] == "Error"

    oom = pod(1, phase="Failed", exit_code=45, finished=51)
    d = decide(job(), running_status(), [failed, oom], at(53))
    assert d.status["phase"] == "Failed" and d.status["lastFailure"]["reason"] == "GPUOutOfMemory"


def test_of_two_plain_errors_the_first_is_named() -> None:
    pods = [
        pod(0, phase="Failed", exit_code=1, finished=52),
        pod(1, phase="Failed", exit_code=3, finished=50),
    ]
    d = decide(job(), running_status(), pods, at(53))
    assert d.status["phase"] == "Restarting"
    assert (d.status["lastFailure"]["exitCode"], d.status["lastFailure"]["pod"]) == (
        3,
        "llama-lora-a1-1",
    )


def test_in_the_same_second_a_killed_worker_is_named_before_its_peer() -> None:
    pods = [
        pod(0, phase="Failed", exit_code=1, finished=50),
        pod(1, phase="Failed", exit_code=137, finished=50),
    ]
    d = decide(job(), running_status(), pods, at(51))
    assert (d.status["lastFailure"]["exitCode"], d.status["lastFailure"]["pod"]) == (
        137,
        "llama-lora-a1-1",
    )


def test_a_specific_failure_ends_the_attempt_at_once() -> None:
    oom = pod(1, phase="Failed", exit_code=45, finished=50)
    d = decide(job(), running_status(), [pod(0), oom], at(50))
    assert d.status["phase"] == "Failed" and d.status["lastFailure"]["reason"] == "GPUOutOfMemory"


def test_invalid_spec_status_names_the_problem() -> None:
    from kubetune_operator.reconcile.status import invalid_spec

    st = invalid_spec({}, 3, "spec.resources.nodes: Input should be greater than or equal to 1", T0)
    assert st["phase"] == "Failed" and st["observedGeneration"] == 3
    assert st["lastFailure"]["reason"] == "InvalidSpec"
    assert "spec.resources.nodes" in cond(st, "Failed")["message"]


def test_progress_within_a_phase_posts_no_event() -> None:
    st = {
        "phase": "Pending",
        "attempt": 1,
        "restarts": 0,
        "startTime": format_time(T0),
        "message": "x",
    }
    d = decide(job(), st, [pod(0, phase="Pending", scheduled=False)], at(5))
    assert d.status["phase"] == "Pending" and d.events == []


def test_job_created_suspended_starts_with_attempt_one() -> None:
    d = decide(with_run_policy(suspend=True), {}, [], T0)
    assert d.status["phase"] == "Suspended" and "startTime" not in d.status
    d = decide(with_run_policy(suspend=False), d.status, [], at(100))
    assert d.status["attempt"] == 1 and d.start_attempt == 1


def test_deadline_clock_restarts_on_resume() -> None:
    suspended = running_status(phase="Suspended")
    resumed = decide(with_run_policy(activeDeadlineSeconds=60), suspended, [], at(500))
    assert resumed.status["attempt"] == 2 and resumed.status["phase"] != "Failed"
    later = decide(with_run_policy(activeDeadlineSeconds=60), resumed.status, [], at(530))
    assert later.status["phase"] != "Failed"
    assert (
        decide(with_run_policy(activeDeadlineSeconds=60), resumed.status, [], at(561)).status[
            "phase"
        ]
        == "Failed"
    )


@pytest.mark.parametrize(
    ("patch", "events", "expected"),
    [
        ({"workers": {"running": 2}}, [], True),
        ({"workers": {"running": 2}, "message": "2/4", "conditions": []}, [], True),
        ({"workers": {"running": 2}, "message": "image pull failed"}, ["WorkerProblem"], False),
        ({"phase": "Running", "workers": {"running": 4}}, [], False),
        ({"attempt": 2, "workers": {"running": 0}}, [], False),
        ({"lastFailure": {"reason": "OOMKilled"}}, [], False),
        ({"startTime": "2026-01-01T00:00:00Z"}, [], False),
    ],
)
def test_only_count_refreshes_may_wait(
    patch: dict[str, Any], events: list[str], expected: bool
) -> None:
    decision = Decision(status={}, events=[Event("Warning", r, r) for r in events])
    assert can_coalesce(patch, decision) is expected
