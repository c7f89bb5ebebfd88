"""Progress reporting through small sinks: a JSON-lines file, a console bar, the job's status."""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from .contract import GROUP, MAX_REPORTED_EVALS, MAX_REPORTED_SOURCES, PLURAL, VERSION


@dataclass
class Progress:
    """One progress snapshot from rank 0."""

    step: int
    total_steps: int
    epoch: float
    loss: float | None = None
    eval_loss: float | None = None
    learning_rate: float | None = None
    tokens_per_second: float | None = None
    elapsed_seconds: float = 0.0
    attempt: int = 1
    event: str = "step"
    checkpoint: dict[str, Any] | None = None
    trained_tokens: int | None = None  # all ranks, all attempts
    export: dict[str, Any] | None = None  # status.export, once the export finished
    eval_step: int | None = None  # the step eval_loss was measured at (0: before training)
    stopped_early: bool = False  # early stopping ended training before total_steps
    best_step: int | None = None  # the best evaluation's step (early stopping, select: best)
    exported_step: int | None = None  # whose weights the export holds (final report)
    preference: dict[str, Any] | None = None  # objective dpo: reference, rewards, accuracy
    evals: list[tuple[int, float]] | None = None  # every evaluation so far: (step, eval loss)
    benchmark: dict[str, Any] | None = None  # status.benchmark, once the run scored it
    data_sources: list[dict[str, Any]] | None = None  # status.dataSources (final report)


def human_eta(seconds: int) -> str:
    """1h12m, 4m3s, 20s."""
    h, rest = divmod(max(0, seconds), 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s}s" if m else f"{s}s")


def eta_seconds(step: int, total: int, elapsed: float, start_step: int = 0) -> int | None:
    """Seconds left at the pace since start_step."""
    done = step - start_step
    if done <= 0 or elapsed <= 0:
        return None
    return math.ceil((total - step) * elapsed / done)


def status_progress(
    p: Progress, start_step: int = 0, now: datetime | None = None
) -> dict[str, Any]:
    """The FineTuneJob status.progress object (camelCase, as the CRD names the fields).

    A run that stopped early is done: 100%, no ETA, and the summary says so.
    """
    percent = min(100, int(100 * p.step / p.total_steps) if p.total_steps else 0)
    eta = eta_seconds(p.step, p.total_steps, p.elapsed_seconds, start_step)
    summary = f"{p.step}/{p.total_steps} ({percent}%)"
    if p.stopped_early:
        percent, eta, summary = 100, None, f"{p.step}/{p.total_steps} (stopped early)"
    out: dict[str, Any] = {
        "step": p.step,
        "totalSteps": p.total_steps,
        "epoch": round(p.epoch, 4),
        "percent": percent,
        "summary": summary,
        "loss": _num(p.loss),
        "evalLoss": _num(p.eval_loss),
        "learningRate": _num(p.learning_rate),
        "tokensPerSecond": _num(p.tokens_per_second, 1),
        "etaSeconds": eta,
        "eta": human_eta(eta) if eta is not None else None,
        "updatedAt": (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "attempt": p.attempt,
        "stoppedEarly": p.stopped_early or None,
        "bestStep": p.best_step,
        "exportedStep": p.exported_step,
        "preference": preference_status(p.preference),
    }
    return {k: v for k, v in out.items() if v is not None}


def preference_status(values: dict[str, Any] | None) -> dict[str, Any] | None:
    """status.progress.preference: the reference named, the numbers rounded, non-finite dropped."""
    if values is None:
        return None
    out = {k: v if isinstance(v, str) else _num(v) for k, v in values.items()}
    return {k: v for k, v in out.items() if v is not None}


def status_patch(p: Progress, start_step: int = 0) -> dict[str, Any]:
    """The status merge patch rank 0 sends: progress (with the evaluations so far), trained
    tokens, the newest committed checkpoint, how many committed checkpoints the store keeps and
    their list, and at the end what was exported, the benchmark scores and the data files
    trained on.

    The trainer writes status.checkpoints itself because only it knows when a checkpoint is
    committed and what pruning left; the operator would need the store's credentials to find
    out, and it never holds them.
    """
    # A merge patch keeps keys it does not name: an ETA no longer estimated is removed.
    progress = {"eta": None, "etaSeconds": None, **status_progress(p, start_step)}
    if p.evals:
        progress["evals"] = eval_history(p.evals)
    status: dict[str, Any] = {"progress": progress}
    if p.benchmark is not None:
        status["benchmark"] = p.benchmark
    if p.data_sources is not None:
        status["dataSources"] = p.data_sources[:MAX_REPORTED_SOURCES]
    if p.checkpoint:
        latest = {
            k: p.checkpoint[k] for k in ("uri", "step", "time") if p.checkpoint.get(k) is not None
        }
        checkpoints: dict[str, Any] = {"latest": latest}
        for key in ("count", "committed"):
            if p.checkpoint.get(key) is not None:
                checkpoints[key] = p.checkpoint[key]
        status["checkpoints"] = checkpoints
    if p.trained_tokens is not None:
        status["trainedTokens"] = p.trained_tokens
    if p.export is not None:
        status["export"] = p.export
    return {"status": status}


def eval_history(evals: list[tuple[int, float]]) -> list[dict[str, Any]]:
    """status.progress.evals: the latest evaluations with a finite loss, oldest first (what a
    sweep's early termination compares; the status carries no NaN)."""
    out = [{"step": step, "loss": _num(loss)} for step, loss in evals if _num(loss) is not None]
    return out[-MAX_REPORTED_EVALS:]


def _num(x: float | None, digits: int = 6) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), digits)


class Sink(Protocol):
    """Where progress goes; force=True for the last report."""

    def report(self, p: Progress, force: bool = False) -> None: ...


class FileSink:
    """JSON lines, one per report (every step/eval/checkpoint event)."""

    def __init__(self, path: str, start_step: int = 0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.start_step = start_step

    def report(self, p: Progress, force: bool = False) -> None:
        line = {"event": p.event, **status_progress(p, self.start_step)}
        if p.eval_step is not None and p.eval_loss is not None:
            line["evalStep"] = p.eval_step
        if p.checkpoint:
            line["checkpoint"] = p.checkpoint
        if p.trained_tokens is not None:
            line["trainedTokens"] = p.trained_tokens
        if p.export is not None:
            line["export"] = p.export
        if p.benchmark is not None:
            line["benchmark"] = p.benchmark
        with self.path.open("a") as f:
            f.write(json.dumps(line) + "\n")


class ConsoleSink:
    """A one-line progress bar on stderr."""

    def __init__(self, start_step: int = 0, width: int = 30) -> None:
        self.start_step, self.width = start_step, width

    def report(self, p: Progress, force: bool = False) -> None:
        s = status_progress(p, self.start_step)
        filled = int(self.width * s["percent"] / 100)
        bar = "#" * filled + "-" * (self.width - filled)
        loss = f" loss {s['loss']:.4f}" if "loss" in s else ""
        ev = f" eval {s['evalLoss']:.4f}" if "evalLoss" in s else ""
        eta = f" eta {s['eta']}" if "eta" in s else ""
        end = "\n" if force else ""
        sys.stderr.write(f"\r[{bar}] {s['summary']}{loss}{ev}{eta}   {end}")
        sys.stderr.flush()


class Throttle:
    """Lets a report through at most every interval seconds (forced ones always)."""

    def __init__(self, interval: float, clock: Any = time.monotonic) -> None:
        self.interval, self.clock = interval, clock
        self.last: float | None = None

    def ready(self, force: bool) -> bool:
        now = self.clock()
        if force or self.last is None or now - self.last >= self.interval:
            self.last = now
            return True
        return False


class KubernetesSink:
    """Patches status.progress of the FineTuneJob through the status subresource (in-cluster)."""

    MIN_INTERVAL = 10.0

    def __init__(
        self, name: str, namespace: str, interval: float, start_step: int = 0, api: Any = None
    ) -> None:
        self.name, self.namespace, self.start_step = name, namespace, start_step
        self.throttle = Throttle(max(self.MIN_INTERVAL, interval))
        if api is None:
            from kubernetes import client, config

            config.load_incluster_config()
            api = client.CustomObjectsApi()
        self.api = api

    def report(self, p: Progress, force: bool = False) -> None:
        if not self.throttle.ready(force):
            return
        body = status_patch(p, self.start_step)
        try:
            self.api.patch_namespaced_custom_object_status(
                GROUP, VERSION, self.namespace, PLURAL, self.name, body
            )
        except Exception as e:  # progress is best effort: training must not die for a status patch
            sys.stderr.write(f"progress patch failed: {e}\n")


class Fanout:
    """Several sinks as one."""

    def __init__(self, sinks: list[Sink]) -> None:
        self.sinks = sinks

    def report(self, p: Progress, force: bool = False) -> None:
        for s in self.sinks:
            s.report(p, force)
