"""TensorBoard event files beside the checkpoints (<checkpoint.uri>/tensorboard).

Rank 0 writes them locally with torch's SummaryWriter and copies them to the store whenever a
checkpoint is committed and at the end, so `tensorboard --logdir` on that folder (or a copy of
it) shows every attempt. A resumed attempt writes a new file that purges the steps after its
checkpoint, so the curves show the steps that count, once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import StorageConfig
from ..storage import open_storage


class TensorBoardTracker:
    """Scalars per step into event files, uploaded to the checkpoint store."""

    name = "tensorboard"

    def __init__(self, uri: str, storage: StorageConfig, local_dir: Path) -> None:
        self.store = open_storage(uri, storage)
        self.local = local_dir
        self.writer: Any = None

    def start(self, params: dict[str, Any], start_step: int) -> None:
        """Open this attempt's event file; readers then drop what earlier attempts logged after
        start_step (the checkpoint this attempt resumed from), which this one does again."""
        from torch.utils.tensorboard import SummaryWriter

        self.local.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(
            str(self.local), purge_step=start_step + 1 if start_step else None
        )

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        """One scalar per metric at this step."""
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)

    def upload(self) -> None:
        """Copy the event files to the store (each attempt's file keeps its own name)."""
        self.writer.flush()
        for path in sorted(self.local.iterdir()):
            if path.is_file():
                self.store.put_file(path, path.name)

    def checkpoint(self) -> None:
        """A checkpoint was committed: the curves up to it are in the store too."""
        self.upload()

    def finish(self, folder: Path | None, card: dict[str, Any]) -> None:
        """Close the event file and copy it out."""
        self.upload()
        self.writer.close()
