"""policies.finished: a job finished in an earlier pass stays finished, its workers are cleaned
up per cleanPodPolicy (a Failed job also stops unfinished ones) and its TTL runs; `finish`
ends a job with the conditions, completion time and clean-up that go with it."""

from __future__ import annotations

from typing import Any

import pytest

from kubetune_operator.reconcile.decision import Pass
from kubetune_operator.reconcile.policies import finished
from kubetune_operator.reconcile.timeutil import format_time
from tests.unit.operator.helpers import (
    T0,
    at,
    condition,
    job,
    outcome,
    pod,
    running_status,
    with_run_policy,
)

pytestmark = pytest.mark.unit

DONE = {"phase": "Succeeded", "attempt": 1, "completionTime": format_time(T0)}
FAILED = {**DONE, "phase": "Failed"}
MIXED = [pod(0, phase="Succeeded"), pod(1)]


@pytest.mark.parametrize(
    ("job_", "status", "pods", "now", "expected"),
    [
        (job(), running_status(), MIXED, at(5), {"ended": False, "deleted": []}),
        (job(), DONE, MIXED, at(5), {"ended": True, "deleted": ["llama-lora-a1-0", "llama-lora-a1-1"]}),
        (with_run_policy(cleanPodPolicy="None"), DONE, MIXED, at(5), {"ended": True, "deleted": []}),
        (with_run_policy(cleanPodPolicy="None"), FAILED, MIXED, at(5), {"ended": True, "deleted": ["llama-lora-a1-1"]}),
        (with_run_policy(cleanPodPolicy="Running"), DONE, MIXED, at(5), {"ended": True, "deleted": ["llama-lora-a1-1"]}),
        (with_run_policy(ttlSecondsAfterFinished=100), DONE, [], at(40), {"ended": True, "requeue": 60.0}),
        (with_run_policy(ttlSecondsAfterFinished=100), DONE, [], at(100), {"ended": True, "requeue": None}),
        (job(), DONE, [], at(99999), {"ended": True, "requeue": None, "events": []}),
    ],
    ids=["running", "all", "none", "none-but-failed", "running-policy", "ttl-wait", "ttl-due", "no-ttl"],
)  # fmt: skip
def test_finished_job(job_: Any, status: dict, pods: list, now: Any, expected: dict) -> None:
    got = outcome(finished.step, job_, status, pods, now)
    assert {k: got[k] for k in expected} == expected
    assert got["decision"].delete_job == (now == at(100))


@pytest.mark.parametrize(("phase", "warning"), [("Succeeded", False), ("Failed", True)])
def test_finish_sets_conditions_time_and_cleans_up(phase: str, warning: bool) -> None:
    p = Pass(job(), running_status(), [pod(0), pod(1)], at(30))
    assert finished.finish(p, phase, "Because", "it is so") is True
    assert p.st["phase"] == phase and p.st["completionTime"] == format_time(at(30))
    assert condition(p.st, phase) == ("True", "Because")
    assert condition(p.st, "Running") == ("False", "Because")
    assert [(e.type, e.reason) for e in p.d.events] == [
        ("Warning" if warning else "Normal", "Because")
    ]
    assert sorted(p.d.delete_pods) == ["llama-lora-a1-0", "llama-lora-a1-1"]
