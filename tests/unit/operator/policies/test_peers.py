"""policies.peers: the failure that ends the attempt; a plain error waits up to
PEER_GRACE_SECONDS for a peer that still runs to report the real cause."""

from __future__ import annotations

import pytest

from kubetune_operator.reconcile.policies import peers
from tests.unit.operator.helpers import at, job, outcome, pod, running_status

pytestmark = pytest.mark.unit

PLAIN = pod(0, phase="Failed", exit_code=1, finished=50)
OOM = pod(1, phase="Failed", exit_code=45, finished=51)


@pytest.mark.parametrize(
    ("status", "pods", "now", "expected", "reason"),
    [
        (running_status(), [pod(0), pod(1)], at(60), {"ended": False, "requeue": None}, None),
        (running_status(), [PLAIN, pod(1)], at(53), {"ended": True, "requeue": 7.0, "phase": "Running"}, None),
        (running_status(), [PLAIN, pod(1)], at(60), {"ended": False}, "Error"),
        (running_status(), [PLAIN, OOM], at(53), {"ended": False}, "GPUOutOfMemory"),
        (running_status(), [PLAIN, pod(1, phase="Succeeded")], at(51), {"ended": False}, "Error"),
        (running_status(), [pod(0)], at(60), {"ended": False}, "NodeLost"),
        (running_status(phase="Pending"), [pod(0, phase="Pending")], at(60), {"ended": False}, None),
    ],
    ids=["none", "plain-waits", "plain-after-grace", "specific-at-once", "no-peer-running",
         "vanished-while-running", "missing-before-start"],
)  # fmt: skip
def test_peers(status: dict, pods: list, now: object, expected: dict, reason: str | None) -> None:
    got = outcome(peers.step, job(), status, pods, now)
    assert {k: got[k] for k in expected} == expected
    assert (got["failure"].reason if got["failure"] else None) == reason
    assert got["events"] == [] and got["deleted"] == []
