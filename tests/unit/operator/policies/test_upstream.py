"""policies.upstream: an ftj:// model source waits for its job to succeed, fails with it."""

from __future__ import annotations

import pytest

from kubetune_operator.reconcile.decision import Upstream
from kubetune_operator.reconcile.policies import upstream
from tests.unit.operator.helpers import T0, job, outcome

pytestmark = pytest.mark.unit

FTJ = job(model={"source": "ftj://base-job"})


@pytest.mark.parametrize(
    ("job_", "up", "expected"),
    [
        (job(), None, {"ended": False, "phase": None, "requeue": None}),
        (FTJ, None, {"ended": True, "phase": "Pending", "events": ["WaitingForModel"], "requeue": 30.0}),
        (FTJ, Upstream("base-job", "Running", None), {"ended": True, "phase": "Pending", "requeue": 30.0}),
        (FTJ, Upstream("base-job", "Succeeded", "s3://m/b"), {"ended": False, "phase": None}),
        (FTJ, Upstream("base-job", "Failed", None), {"ended": True, "phase": "Failed", "events": ["UpstreamFailed"]}),
    ],
    ids=["not-ftj", "unknown", "running", "succeeded", "failed"],
)  # fmt: skip
def test_upstream(job_: object, up: Upstream | None, expected: dict) -> None:
    got = outcome(upstream.step, job_, {}, [], T0, up)
    assert {k: got[k] for k in expected} == expected
