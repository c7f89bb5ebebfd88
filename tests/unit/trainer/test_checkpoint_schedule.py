"""checkpoint.schedule: every N steps, at least every M minutes on rank 0, never twice for the
last step, and a final checkpoint unless the resumed one already holds the step."""

from __future__ import annotations

import pytest

from kubetune_trainer.checkpoint.schedule import SaveSchedule
from kubetune_trainer.config import CheckpointConfig

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("every_steps", "every_minutes", "keeps_clock", "step", "elapsed", "due"),
    [
        (None, None, True, 5, 10**6, False),
        (5, None, True, 5, 0, True),
        (5, None, True, 6, 0, False),
        (5, None, True, 10, 0, False),  # the last step: the final checkpoint covers it
        (None, 2.0, True, 3, 119, False),
        (None, 2.0, True, 3, 120, True),
        (None, 2.0, False, 3, 10**6, False),  # only rank 0 keeps the clock
        (5, 2.0, True, 7, 130, True),
    ],
    ids=["off", "every-steps", "between", "last-step", "minutes-not-yet", "minutes", "not-rank-0",
         "either"],
)  # fmt: skip
def test_due(
    every_steps: int | None,
    every_minutes: float | None,
    keeps_clock: bool,
    step: int,
    elapsed: float,
    due: bool,
) -> None:
    now = [1000.0]
    cfg = CheckpointConfig(uri="file:///c", every_steps=every_steps, every_minutes=every_minutes)
    schedule = SaveSchedule(cfg, total_steps=10, keeps_clock=keeps_clock, clock=lambda: now[0])
    now[0] += elapsed
    assert schedule.due(step) is due


def test_minutes_count_from_the_last_save() -> None:
    now = [0.0]
    cfg = CheckpointConfig(uri="file:///c", every_minutes=1.0)
    schedule = SaveSchedule(cfg, total_steps=100, keeps_clock=True, clock=lambda: now[0])
    now[0] = 61.0
    assert schedule.due(1)
    schedule.saved()
    now[0] = 100.0
    assert not schedule.due(2)
    now[0] = 121.0
    assert schedule.due(3)


@pytest.mark.parametrize(
    ("step", "resumed", "save_final", "due"),
    [(10, None, True, True), (10, 4, True, True), (10, 10, True, False), (10, None, False, False)],
)
def test_final_checkpoint(step: int, resumed: int | None, save_final: bool, due: bool) -> None:
    """The operator's default store (save_final false) keeps only what a suspension leaves."""
    cfg = CheckpointConfig(uri="file:///c", save_final=save_final)
    schedule = SaveSchedule(cfg, total_steps=step, keeps_clock=True)
    assert schedule.final_due(step, resumed) is due


@pytest.mark.parametrize(
    ("saves_best", "step", "best_step", "evaluated", "due"),
    [
        (True, 6, 6, 6, True),  # the evaluation at this step is the new best
        (True, 6, 4, 6, False),  # evaluated, but not better than step 4
        (True, 6, 6, 4, False),  # no evaluation at this step
        (True, 0, 0, 0, False),  # the baseline before training: nothing trained to keep
        (False, 6, 6, 6, False),  # output.select last, or no checkpoints
    ],
    ids=["new-best", "not-better", "no-eval", "baseline", "not-selecting-best"],
)
def test_a_new_best_evaluation_is_saved_when_the_job_exports_the_best(
    saves_best: bool, step: int, best_step: int, evaluated: int, due: bool
) -> None:
    cfg = CheckpointConfig(uri="file:///c", every_steps=100)
    schedule = SaveSchedule(cfg, total_steps=10, keeps_clock=True, saves_best=saves_best)
    assert schedule.best_due(step, best_step, evaluated) is due
