"""policies.created: the first pass marks the job accepted, once."""

from __future__ import annotations

import pytest

from kubetune_operator.reconcile.policies import created
from tests.unit.operator.helpers import T0, condition, job, outcome, running_status

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ({}, ("True", "Created")),
        ({**running_status(), "conditions": [{"type": "Running", "status": "True"}]}, None),
    ],
)
def test_created_condition_once(status: dict, expected: tuple | None) -> None:
    got = outcome(created.step, job(), status, [], T0)
    assert got["ended"] is False and got["events"] == []
    assert condition(got["status"], "Created") == expected
