"""Early termination of clearly losing trials: the median stopping rule (Google Vizier; Katib's
medianstop), on the eval losses each trial's trainer lists in status.progress.evals.

A running trial is stopped at step S when its best eval loss by S is worse than the median of
the completed trials' average eval losses up to S. Only completed trials count (a running peer
may still catch up), a trial must have reported a few evaluations, and nothing is stopped
before enough trials completed: a rule that stops the worse of two good trials is no use.
Evaluations at step 0 score the common starting point and are left out.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from kubetune_operator.api.sweep import EarlyTermination

Evals = list[tuple[int, float]]


def eval_history(job: Mapping[str, Any] | None) -> Evals:
    """(step, eval loss) of a trial job's evaluations after step 0, oldest first."""
    progress = ((job or {}).get("status") or {}).get("progress") or {}
    out = []
    for point in progress.get("evals") or []:
        step, loss = point.get("step"), point.get("loss")
        if isinstance(step, int) and step > 0 and isinstance(loss, (int, float)):
            out.append((step, float(loss)))
    return sorted(out)


def running_average(evals: Evals, step: int) -> float | None:
    """Mean eval loss of the evaluations at or before `step` (None if none)."""
    upto = [loss for s, loss in evals if s <= step]
    return sum(upto) / len(upto) if upto else None


def median_stop(
    trial: Evals, completed: Sequence[Evals], rule: EarlyTermination, minimize: bool = True
) -> str | None:
    """Why the trial should stop now, or None to let it run."""
    if len(trial) < rule.min_evals or len(completed) < rule.min_completed_trials:
        return None
    step = trial[-1][0]
    peers = [a for a in (running_average(c, step) for c in completed) if a is not None]
    if len(peers) < rule.min_completed_trials:
        return None
    sign = 1.0 if minimize else -1.0
    best = min((sign * loss for _, loss in trial)) * sign
    median = statistics.median(peers)
    if sign * best <= sign * median:
        return None
    return (
        f"best eval loss {best:.4f} by step {step} is worse than {median:.4f}, the median of "
        f"{len(peers)} completed trials' average eval loss up to that step"
    )
