"""After a local run: read the progress file, draw the loss curve, summarise."""

from __future__ import annotations

import json
from pathlib import Path

from kubetune_trainer.tracking.plot import Curve, plot_curve

__all__ = ["Curve", "plot_curve", "read_curve", "summary"]


def read_curve(progress_file: Path) -> Curve:
    """Loss points from the JSON-lines progress file (later attempts override earlier steps).

    Step records carry the latest eval loss; a new value marks an evaluation. One first seen on
    step 1 is the baseline the trainer measures before training, so it is placed at step 0.
    """
    train: dict[int, float] = {}
    evals: dict[int, float] = {}
    last_eval: float | None = None
    if not progress_file.exists():
        return Curve()
    for line in progress_file.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        step = rec.get("step")
        if step is None:
            continue
        if rec.get("loss") is not None and rec.get("event", "step") == "step":
            train[int(step)] = float(rec["loss"])
        value = rec.get("evalLoss")
        if value is not None and (value != last_eval or rec.get("event") == "eval"):
            evals[0 if int(step) == 1 and not evals else int(step)] = float(value)
            last_eval = value
    return Curve(sorted(train.items()), sorted(evals.items()))


def summary(curve: Curve) -> list[str]:
    """Lines for the terminal: eval loss first and last, train loss first and last."""
    lines = []
    if curve.evals:
        (s0, e0), (s1, e1) = curve.evals[0], curve.evals[-1]
        lines.append(f"eval loss: {e0:.4f} (step {s0}, before training) -> {e1:.4f} (step {s1})")
    if curve.train:
        (s0, l0), (s1, l1) = curve.train[0], curve.train[-1]
        lines.append(f"train loss: {l0:.4f} (step {s0}) -> {l1:.4f} (step {s1})")
    return lines
