"""What status lists of the committed checkpoints, and which one is best.

Every manifest records the train loss of its step and the eval loss measured there (when an
evaluation fell on it), so the listing needs nothing but the manifests the pruner reads anyway.
"""

from __future__ import annotations

from typing import Any

from ..contract import MAX_LISTED_CHECKPOINTS
from ..storage import join
from .manifest import Committed


def losses(manifest: dict[str, Any]) -> tuple[float | None, float | None]:
    """(train loss, eval loss) recorded in a manifest; None for what was not measured."""
    m = manifest.get("metrics") or {}
    return m.get("train_loss"), m.get("eval_loss")


def best(checkpoints: list[Committed]) -> Committed | None:
    """The checkpoint with the lowest eval loss (the earliest on a tie: it trained less)."""
    scored = [c for c in checkpoints if losses(c.manifest)[1] is not None]
    return min(scored, key=lambda c: (losses(c.manifest)[1], c.step), default=None)


def entry(c: Committed, root_uri: str, is_best: bool) -> dict[str, Any]:
    """One status.checkpoints.committed item (camelCase, as the CRD names the fields)."""
    train, evaluation = losses(c.manifest)
    out: dict[str, Any] = {
        "step": c.step,
        "time": c.manifest.get("time"),
        "trainLoss": train,
        "evalLoss": evaluation,
        "uri": join(root_uri, c.tag),
    }
    if is_best:
        out["best"] = True
    return {k: v for k, v in out.items() if v is not None}


def listing(
    kept: list[Committed], root_uri: str, limit: int = MAX_LISTED_CHECKPOINTS
) -> list[dict[str, Any]]:
    """The newest `limit` committed checkpoints, newest first, the best always among them."""
    top = best(kept)
    newest = sorted(kept, key=lambda c: c.step, reverse=True)
    shown = newest[:limit]
    if top is not None and top not in shown:
        shown = [*newest[: limit - 1], top]
    return [entry(c, root_uri, c is top) for c in shown]


def best_evaluated(listed: list[dict[str, Any]], last: tuple[int, float | None]) -> int:
    """The step of the lowest eval loss among listed checkpoints (status entries) and the last
    step (which is checkpointed at the end); the last step when nothing was evaluated, the
    earliest on a tie."""
    step, value = last
    scored = [(e["evalLoss"], e["step"]) for e in listed if e.get("evalLoss") is not None]
    if value is not None:
        scored.append((value, step))
    return min(scored)[1] if scored else step
