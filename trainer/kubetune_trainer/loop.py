"""The training loop: step, report, evaluate, checkpoint, stop (early, on SIGTERM, or at the end).

Each evaluation that improves on the best keeps its weights (t.keep_best: with early stopping)
or checkpoints them (t.best_due: with output.select best): those, not the last, are exported.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from .config import TrainerConfig
from .contract import MAX_REPORTED_EVALS


@dataclass
class LoopState:
    """What the loop carries between steps (and through checkpoints as client state)."""

    step: int = 0
    best_eval: float | None = None
    best_step: int | None = None  # the step of best_eval
    evals_without_improvement: int = 0
    losses: list[float] = field(default_factory=list)
    evals: list[tuple[int, float]] = field(default_factory=list)
    tokens: int = 0
    train_seconds: float = 0.0
    step_ends: list[float] = field(default_factory=list)  # perf_counter at the end of each step
    stopped_early: bool = False
    preempted: bool = False
    benchmark_before: dict[str, float] | None = None  # the starting weights' benchmark scores

    def client_state(self) -> dict[str, Any]:
        """The part saved inside checkpoints."""
        return {
            "step": self.step,
            "best_eval": self.best_eval,
            "best_step": self.best_step,
            "evals_without_improvement": self.evals_without_improvement,
            "tokens": self.tokens,
            "evals": [list(e) for e in self.evals[-MAX_REPORTED_EVALS:]],
            "benchmark_before": self.benchmark_before,
        }


class Trainable(Protocol):
    """What the loop drives (the Trainer): steps, the collective stop/save answer, evaluation,
    reporting and saving. The loop owns the order; these own the work."""

    cfg: TrainerConfig
    total_steps: int
    benchmark: Any
    """spec.benchmark's records, or None without one."""

    def train_step(self, step: int) -> tuple[float, int]:
        """One optimizer step; (loss, tokens of this rank)."""
        ...

    def agree_on_signals(self, step: int) -> tuple[bool, bool]:
        """(stop, save now), the same on every rank."""
        ...

    def score_benchmark(self) -> dict[str, float]:
        """spec.benchmark's scores of the weights as they are now (all ranks)."""
        ...

    def eval_loss(self) -> float | None:
        """Validation loss over all ranks; None without validation data."""
        ...

    def report(self, s: LoopState, tokens: int, force: bool = False, final: bool = False) -> None:
        """Metrics and progress after a step (final: the run's last report)."""
        ...

    def keep_best(self, step: int) -> None:
        """Keep the weights of a new best evaluation."""
        ...

    def best_due(self, s: LoopState) -> bool:
        """Whether the evaluation just made at s.step is a new best that is to be saved."""
        ...

    def save(self, s: LoopState, wait: bool = False) -> None:
        """A checkpoint of the state after s.step."""
        ...


def improved(best: float | None, value: float, min_delta: float) -> bool:
    """Whether an eval loss beats the best by more than min_delta."""
    return best is None or value < best - min_delta


def run(t: Trainable, s: LoopState) -> LoopState:
    """Train from s.step to t.total_steps."""
    cfg = t.cfg.training
    if s.step == 0 and t.benchmark is not None:
        s.benchmark_before = t.score_benchmark()  # a resumed run has them from its checkpoint
    if s.step == 0 and cfg.eval_every_steps:
        evaluate(t, s)  # the baseline the fine-tune is judged against
    while s.step < t.total_steps:
        started = time.perf_counter()
        loss, tokens = t.train_step(s.step)
        s.step += 1
        s.losses.append(loss)
        s.tokens += tokens
        s.train_seconds += time.perf_counter() - started
        stop, save_due = t.agree_on_signals(s.step)
        if cfg.eval_every_steps and s.step % cfg.eval_every_steps == 0 and s.step < t.total_steps:
            evaluate(t, s)
        t.report(s, tokens)
        if stop:
            s.preempted = True
            t.save(s)
            return s
        if s.stopped_early:
            break
        if t.best_due(s) or save_due:
            t.save(s)
        s.step_ends.append(time.perf_counter())
    if not s.evals or s.evals[-1][0] != s.step:
        evaluate(t, s)
    t.report(s, 0, force=True, final=True)
    return s


def evaluate(t: Trainable, s: LoopState) -> None:
    """Eval loss on the validation set; early stopping bookkeeping."""
    value = t.eval_loss()
    if value is None:
        return
    s.evals.append((s.step, value))
    cfg = t.cfg.training
    if improved(s.best_eval, value, cfg.early_stopping_min_delta):
        s.best_eval, s.best_step, s.evals_without_improvement = value, s.step, 0
        t.keep_best(s.step)
    else:
        s.evals_without_improvement += 1
        if (
            cfg.early_stopping_patience
            and s.evals_without_improvement >= cfg.early_stopping_patience
        ):
            s.stopped_early = True
