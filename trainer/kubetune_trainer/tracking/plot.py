"""The loss curve as a PNG: `kubetune run` draws it from the progress file, an MLflow run from
its metric history."""

from __future__ import annotations

from pathlib import Path

Points = list[tuple[int, float]]


def plot_losses(train: Points, evals: Points, path: Path, title: str) -> Path | None:
    """A PNG of train and eval loss by step (None when matplotlib is missing or nothing was
    reported)."""
    if not train and not evals:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss")
    if evals:
        ax.plot(*zip(*evals, strict=True), "o-", label="eval loss")
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
