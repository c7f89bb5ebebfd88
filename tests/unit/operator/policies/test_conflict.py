"""policies.conflict: children whose names another object holds keep the job Pending with
condition NameConflict and a Warning while the controller retries; resolved after."""

from __future__ import annotations

import pytest

from kubetune_operator.reconcile.decision import Pass
from kubetune_operator.reconcile.policies import conflict
from kubetune_operator.reconcile.timeutil import format_time
from tests.unit.operator.helpers import T0, at, condition, job

pytestmark = pytest.mark.unit

HELD = "ConfigMap llama-lora-a1-config exists and is not the job's"
PENDING = {"phase": "Pending", "attempt": 1, "restarts": 0, "startTime": format_time(T0)}
REPORTED = {
    **PENDING,
    "conditions": [{"type": "NameConflict", "status": "True", "reason": "NameConflict"}],
}


@pytest.mark.parametrize(
    ("status", "held", "ended", "events", "cond", "requeue"),
    [
        (PENDING, None, False, [], None, None),
        (PENDING, HELD, True, ["NameConflict"], ("True", "NameConflict"), 10.0),
        (REPORTED, HELD, True, ["NameConflict"], ("True", "NameConflict"), 10.0),
        (REPORTED, None, False, [], ("False", "Resolved"), None),
    ],
    ids=["none", "held", "still-held", "resolved"],
)
def test_conflict(
    status: dict, held: str | None, ended: bool, events: list, cond: tuple | None,
    requeue: float | None,
) -> None:  # fmt: skip
    p = Pass(job(), status, [], at(5), conflict=held)
    assert conflict.step(p) is ended
    assert [e.reason for e in p.d.events] == events
    assert condition(p.st, "NameConflict") == cond
    assert p.d.requeue_after == requeue
    if held:
        assert (p.st["phase"], p.st["message"]) == ("Pending", HELD)
