"""policies.leftovers: pods of an earlier attempt are deleted and waited for (a bounded time
for those stuck terminating)."""

from __future__ import annotations

import pytest

from kubetune_operator.reconcile.policies import leftovers
from tests.unit.operator.helpers import at, job, outcome, pod, running_status

pytestmark = pytest.mark.unit

ATTEMPT_2 = running_status(attempt=2, restarts=1, phase="Restarting")


@pytest.mark.parametrize(
    ("pods", "now", "expected"),
    [
        ([], at(10), {"ended": False, "deleted": []}),
        ([pod(1, attempt=1, phase="Failed", exit_code=1)], at(10), {"ended": False}),
        ([pod(0, attempt=1), pod(1, attempt=1, phase="Failed", exit_code=1)], at(10),
         {"ended": True, "deleted": ["llama-lora-a1-0"], "phase": "Restarting", "requeue": 5.0}),
        ([pod(0, attempt=1, deleting=True)], at(10), {"ended": True, "deleted": [], "requeue": 5.0}),
        ([pod(0, attempt=1, deleting=True)], at(32), {"ended": False}),
    ],
    ids=["none", "finished-ones-hold-nothing", "running-one", "terminating", "terminating-too-long"],
)  # fmt: skip
def test_leftovers(pods: list, now: object, expected: dict) -> None:
    got = outcome(leftovers.step, job(), ATTEMPT_2, pods, now)
    assert {k: got[k] for k in expected} == expected
