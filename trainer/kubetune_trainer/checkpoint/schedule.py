"""When a checkpoint is due: the one owner of that question.

Periodic saves come every `every_steps` optimizer steps and at least every `every_minutes`
(whichever comes first); the minutes are rank 0's clock, so the trainer turns "due" into one
collective answer before anyone saves. A run that ends saves a final checkpoint unless the one
it resumed from already holds that step, or the store only takes what a suspension or
preemption leaves (save_final false: the operator's default store); a run stopped by SIGTERM
saves whatever step it is at.
With output.select best, each evaluation that becomes the best is saved too: the export comes
from that checkpoint, which outlives a restart.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..config import CheckpointConfig


class SaveSchedule:
    """Decides when this run saves; told when it did."""

    def __init__(
        self,
        cfg: CheckpointConfig,
        total_steps: int,
        keeps_clock: bool,
        clock: Callable[[], float] = time.monotonic,
        saves_best: bool = False,
    ) -> None:
        """keeps_clock: this rank watches every_minutes (rank 0; the others follow it);
        saves_best: a new best evaluation is saved (output.select best, checkpoints on)."""
        self.every_steps, self.every_minutes = cfg.every_steps, cfg.every_minutes
        self.saves_best = saves_best
        self.total_steps, self.keeps_clock, self.clock = total_steps, keeps_clock, clock
        self.save_final = cfg.save_final
        self.last_save = clock()

    def due(self, step: int) -> bool:
        """A periodic checkpoint is due after `step` (never at the last step: the final one is)."""
        if self.every_steps and step % self.every_steps == 0 and step < self.total_steps:
            return True
        return bool(
            self.every_minutes
            and self.keeps_clock
            and self.clock() - self.last_save >= 60 * self.every_minutes
        )

    def best_due(self, step: int, best_step: int | None, evaluated_step: int | None) -> bool:
        """A checkpoint is due because the evaluation just made at `step` is the best so far."""
        return self.saves_best and step > 0 and best_step == step and evaluated_step == step

    def saved(self) -> None:
        """A checkpoint was just saved: the minutes count from now."""
        self.last_save = self.clock()

    def final_due(self, step: int, resumed_step: int | None) -> bool:
        """A run that ended saves its last step, unless it resumed at that step and did none
        or its store keeps no final checkpoint."""
        return self.save_final and resumed_step != step
