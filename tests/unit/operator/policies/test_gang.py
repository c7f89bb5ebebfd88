"""policies.gang: no worker starts while the gang scheduler's PodGroup API is not served."""

from __future__ import annotations

import pytest

from kubetune_operator.reconcile.policies import gang
from tests.unit.operator.helpers import at, job, outcome, running_status
from tests.unit.operator.helpers import gang as workers

pytestmark = pytest.mark.unit

MISSING = "this cluster serves no PodGroup API scheduling.x-k8s.io/v1alpha1"


@pytest.mark.parametrize(
    ("status", "pods", "missing", "expected"),
    [
        ({}, [], None, {"ended": False}),
        ({}, [], MISSING, {"ended": True, "phase": "Pending", "events": ["GangSchedulerNotInstalled"],
                           "requeue": gang.POLL_SECONDS}),
        (running_status(), workers(), MISSING, {"ended": False}),
    ],
    ids=["api-served", "api-missing", "workers-exist"],
)  # fmt: skip
def test_gang(status: dict, pods: list, missing: str | None, expected: dict) -> None:
    got = outcome(gang.step, job(), status, pods, at(1), gang_missing=missing)
    assert {k: got[k] for k in expected} == expected
