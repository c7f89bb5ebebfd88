"""policies.start: missing workers make the Decision carry the attempt's rendered children;
a job that cannot be planned fails with reason InvalidSpec instead."""

from __future__ import annotations

import pytest

from kubetune_operator.api.spec import FineTuneJob
from kubetune_operator.reconcile.decision import Upstream
from kubetune_operator.reconcile.policies import start
from kubetune_operator.reconcile.timeutil import format_time
from tests.unit.operator.helpers import (
    T0,
    at,
    condition,
    job,
    manifest,
    outcome,
    pod,
)

pytestmark = pytest.mark.unit


def two_hub_tokens() -> FineTuneJob:
    doc = manifest()
    doc["spec"]["dataset"]["train"] = "hf://datasets/org/data"
    doc["spec"]["dataset"]["credentialsSecret"] = "other-token"
    return FineTuneJob.model_validate(doc)


FIRST = ["ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Service"]


@pytest.mark.parametrize(
    ("job_", "status", "pods", "upstream", "start_attempt", "kinds"),
    [
        (job(), {}, [], None, 1, [*FIRST, "Pod", "Pod"]),
        (job(), {"attempt": 3, "startTime": format_time(T0)}, [pod(0, attempt=3)], None, 3, [*FIRST, "Pod", "Pod"]),
        (job(), {"startTime": format_time(T0)}, [pod(0), pod(1)], None, None, []),
        (job(model={"source": "ftj://base"}), {}, [], Upstream("base", "Succeeded", "s3://m/b"), 1, [*FIRST, "Pod", "Pod"]),
    ],
    ids=["new", "third-attempt", "all-there", "ftj"],
)  # fmt: skip
def test_start(job_: FineTuneJob, status: dict, pods: list, upstream: Upstream | None,
               start_attempt: int | None, kinds: list) -> None:  # fmt: skip
    got = outcome(start.step, job_, status, pods, at(5), upstream)
    d = got["decision"]
    assert got["ended"] is False
    assert d.start_attempt == start_attempt
    assert [o["kind"] for o in d.children] == kinds
    if start_attempt:
        pods_made = [o["metadata"]["name"] for o in d.children if o["kind"] == "Pod"]
        assert pods_made == [f"llama-lora-a{start_attempt}-{i}" for i in range(2)]
    assert got["status"].get("startTime") == status.get("startTime")  # deadline.start_clock's


@pytest.mark.parametrize(
    ("job_", "upstream", "field"),
    [
        (two_hub_tokens(), None, "spec.dataset.credentialsSecret"),
        (job(model={"source": "ftj://base"}), Upstream("base", "Succeeded", None), "spec.model.source"),
    ],
    ids=["two-hub-tokens", "upstream-without-output"],
)  # fmt: skip
def test_a_job_that_cannot_be_planned_fails_naming_the_field(
    job_: FineTuneJob, upstream: Upstream | None, field: str
) -> None:
    got = outcome(start.step, job_, {}, [], at(5), upstream)
    d = got["decision"]
    assert got["ended"] is True and got["phase"] == "Failed"
    assert d.start_attempt is None and d.children == []
    assert condition(got["status"], "Failed") == ("True", "InvalidSpec")
    assert got["status"]["lastFailure"]["reason"] == "InvalidSpec"
    assert field in got["status"]["message"]
    assert "startTime" not in got["status"]
