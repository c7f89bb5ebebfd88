"""Weights & Biases through its own client, for users who configure it (kubetune's tests do
not exercise it: there is no W&B server to test against).

The run id is derived from the job's uid, so a resumed attempt continues the same run;
WANDB_API_KEY comes from the secret, WANDB_BASE_URL from tracking.wandb.baseUrl.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from ..config import JobRef, WandbConfig
from ..errors import BadInputError


def run_id(job: JobRef) -> str:
    """A stable W&B run id for the job (every attempt logs to it)."""
    key = job.uid or f"{job.namespace}/{job.name}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


class WandbTracker:
    """Rank 0's W&B run."""

    name = "wandb"

    def __init__(self, cfg: WandbConfig, job: JobRef, local_dir: Path) -> None:
        self.cfg, self.job, self.local = cfg, job, local_dir
        self.run: Any = None

    def start(self, params: dict[str, Any], start_step: int) -> None:
        """wandb.init, resuming the job's run if an earlier attempt began it."""
        try:
            import wandb
        except ImportError:
            raise BadInputError(
                "spec.tracking.wandb: the trainer image has no wandb package; use an image "
                "built with `pip install wandb`"
            ) from None
        if self.cfg.base_url:
            os.environ["WANDB_BASE_URL"] = self.cfg.base_url
        self.local.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=self.cfg.project,
            entity=self.cfg.entity,
            name=self.cfg.run_name,
            id=run_id(self.job),
            resume="allow",
            config={k: v for k, v in params.items() if k not in ("spec", "reporting")},
            dir=str(self.local),
        )

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        """W&B drops steps below its last one: a resumed attempt's redone steps are not shown
        twice."""
        self.run.log(metrics, step=step)

    def checkpoint(self) -> None:
        """W&B streams on its own."""

    def finish(self, folder: Path | None, card: dict[str, Any]) -> None:
        """The run card (of an export) as a file of the run; the run ends."""
        if folder is not None:
            self.run.save(str(folder / "kubetune_run.json"), base_path=str(folder))
        self.run.finish()
