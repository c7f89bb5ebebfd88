"""The loss curve as a PNG: `kubetune run` draws it from the progress file, an MLflow run from
its metric history."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Curve:
    """Training and evaluation loss by step, as the trainer reported them."""

    train: list[tuple[int, float]] = field(default_factory=list)
    evals: list[tuple[int, float]] = field(default_factory=list)


def plot_curve(curve: Curve, path: Path, title: str) -> Path | None:
    """A PNG of the loss curve (None when matplotlib is missing or nothing was reported)."""
    if not curve.train and not curve.evals:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if curve.train:
        ax.plot(*zip(*curve.train, strict=True), label="train loss")
    if curve.evals:
        ax.plot(*zip(*curve.evals, strict=True), "o-", label="eval loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
