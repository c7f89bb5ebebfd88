"""Pods of an earlier attempt still running: the next attempt waits until they are gone.

A new gang would otherwise compete with the old one for the same accelerators and checkpoint
folder. Pods stuck terminating count for a bounded time only, so a lost node cannot hold the
job forever.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from kubetune_operator.reconcile.observe import Observation

if TYPE_CHECKING:
    from kubetune_operator.reconcile.decision import Pass

STALE_POD_SLACK = timedelta(seconds=30)


def live_others(obs: Observation, now: datetime) -> list[str]:
    """Pods of other attempts that still hold resources (terminating ones for a bounded time)."""
    out = []
    for w in obs.others:
        if w.phase in ("Succeeded", "Failed") and not w.terminating:
            continue
        if w.terminating and w.deleted_at and now > w.deleted_at + STALE_POD_SLACK:
            continue
        out.append(w.name)
    return out


def step(p: Pass) -> bool:
    """Delete what is left of earlier attempts and wait (phase Restarting) while it exits."""
    stale = live_others(p.obs, p.now)
    if not stale:
        return False
    p.d.delete_pods = [w.name for w in p.obs.others if w.name in stale and not w.terminating]
    p.phase(
        "Restarting",
        "Restarting",
        f"waiting for {len(stale)} pod(s) of an earlier attempt to exit",
    )
    p.d.requeue(5)
    return True
