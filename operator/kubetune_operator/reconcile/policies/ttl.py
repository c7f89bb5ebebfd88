"""ttlSecondsAfterFinished: delete the whole job this long after it finished."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kubetune_operator.reconcile.timeutil import parse_time, seconds_until

if TYPE_CHECKING:
    from kubetune_operator.reconcile.decision import Pass


def schedule(p: Pass) -> None:
    """A finished job: delete it once its TTL ran out, else look again when it will have."""
    left = seconds_until(
        parse_time(p.st.get("completionTime")), p.run_policy.ttl_seconds_after_finished, p.now
    )
    if left is not None and left <= 0:
        p.d.delete_job = True
    else:
        p.d.requeue(left)
