"""After a local run: read the progress file, draw the loss curve, summarise."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from kubetune_trainer.tracking.plot import plot_losses


@dataclass
class Curve:
    """Training and evaluation loss by step, as the trainer reported them; for preference tuning
    also the reference used and the validation rewards and accuracy of each evaluation."""

    train: list[tuple[int, float]] = field(default_factory=list)
    evals: list[tuple[int, float]] = field(default_factory=list)
    end: dict[str, object] = field(default_factory=dict)  # the trainer's final report
    preference: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    reference: str | None = None


def read_curve(progress_file: Path) -> Curve:
    """Loss points from the JSON-lines progress file (later attempts override earlier steps).

    Records carry the latest eval loss and the step it was measured at (evalStep; 0 is the
    baseline the trainer measures before training when evaluations are periodic).
    """
    train: dict[int, float] = {}
    evals: dict[int, float] = {}
    end: dict[str, object] = {}
    prefs: dict[int, dict[str, float]] = {}
    reference: str | None = None
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
        pref = rec.get("preference") or {}
        reference = pref.get("reference", reference)
        if rec.get("evalLoss") is not None:
            at = int(rec.get("evalStep", step))
            evals[at] = float(rec["evalLoss"])
            if "evalAccuracy" in pref:
                prefs[at] = pref
        if rec.get("event") == "end":
            end = rec
    return Curve(
        sorted(train.items()), sorted(evals.items()), end, sorted(prefs.items()), reference
    )


def plot_curve(curve: Curve, path: Path, title: str) -> Path | None:
    """A PNG of the loss curve (None when matplotlib is missing or nothing was reported)."""
    return plot_losses(curve.train, curve.evals, path, title)


def eval_label(step: int) -> str:
    """Where an evaluation was taken; step 0 is before training."""
    return f"step {step}, before training" if step == 0 else f"step {step}"


def summary(curve: Curve) -> list[str]:
    """Lines for the terminal: eval loss first and last, train loss first and last."""
    lines = []
    if len(curve.evals) == 1:
        s0, e0 = curve.evals[0]
        lines.append(f"eval loss: {e0:.4f} ({eval_label(s0)})")
        if s0 != 0:
            lines.append("(set spec.training.evalEverySteps for a baseline eval loss at step 0)")
    elif curve.evals:
        (s0, e0), (s1, e1) = curve.evals[0], curve.evals[-1]
        lines.append(f"eval loss: {e0:.4f} ({eval_label(s0)}) -> {e1:.4f} ({eval_label(s1)})")
    if curve.train:
        (s0, l0), (s1, l1) = curve.train[0], curve.train[-1]
        lines.append(f"train loss: {l0:.4f} (step {s0}) -> {l1:.4f} (step {s1})")
    return (
        lines
        + early_stop_lines(curve.end, dict(curve.evals))
        + preference_summary(curve)
        + benchmark_lines(curve.end)
    )


def benchmark_lines(end: dict[str, object]) -> list[str]:
    """spec.benchmark's scores before and after training."""
    bench = end.get("benchmark")
    if not isinstance(bench, dict):
        return []
    before, after = bench.get("before") or {}, bench.get("after") or {}
    parts = []
    for key, label, fmt in (
        ("evalLoss", "eval loss", "{:.4f}"),
        ("exactMatch", "exact match", "{:.1%}"),
    ):
        if key in after:
            was = fmt.format(before[key]) if key in before else "?"
            parts.append(f"{label} {was} -> {fmt.format(after[key])}")
    if not parts:
        return []
    return [f"benchmark ({bench.get('records')} records): " + ", ".join(parts)]


def early_stop_lines(end: dict[str, object], evals: dict[int, float]) -> list[str]:
    """Where early stopping ended training and which step's weights were exported."""
    if not end.get("stoppedEarly"):
        return []
    best, exported = end.get("bestStep"), end.get("exportedStep")
    lines = [
        f"stopped early at step {end.get('step')} of {end.get('totalSteps')}: the eval loss "
        "stopped improving (spec.training.earlyStopping)"
    ]
    if exported == best and isinstance(best, int):
        loss = f", eval loss {evals[best]:.4f}" if best in evals else ""
        lines.append(f"exported the best weights: step {best}{loss}")
    else:
        lines.append(
            f"the best weights (step {best}) were lost in a restart: exported step {exported}"
        )
    return lines


REFERENCES = {
    "precomputed": "log-probabilities of the start weights, computed before the first step",
    "adapter-disabled": "the base model, the adapter switched off",
    "none": "none (reference-free)",
}


def preference_summary(curve: Curve) -> list[str]:
    """Preference tuning: validation accuracy and reward margin before and after, the reference."""
    lines = []
    if curve.preference:
        (s0, p0), (s1, p1) = curve.preference[0], curve.preference[-1]
        lines.append(
            f"preference accuracy (validation): {p0['evalAccuracy']:.0%} (step {s0}) -> "
            f"{p1['evalAccuracy']:.0%} (step {s1})"
        )
        lines.append(
            f"reward margin (validation): {p0['evalRewardMargin']:.4f} -> "
            f"{p1['evalRewardMargin']:.4f} (chosen {p1['evalRewardChosen']:.4f}, "
            f"rejected {p1['evalRewardRejected']:.4f})"
        )
    if curve.reference:
        lines.append(f"reference: {curve.reference}: {REFERENCES.get(curve.reference, '')}")
    return lines
