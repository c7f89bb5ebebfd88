"""Results people can use: experiment trackers, Kubernetes events and model registries.

`Results` is what the Trainer talks to. On rank 0 it holds the job's event sink and the trackers
the spec asks for (MLflow, TensorBoard, W&B); on every other rank it holds nothing, so the
Trainer never asks which rank it is. A tracker that fails while training is switched off with a
Warning event (training goes on); a registry that refuses the export fails the job, since the
user asked for it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from ..config import TrainerConfig
from .events import EventSink, KubernetesEvents, LogEvents

log = logging.getLogger("kubetune_trainer")


class Tracker(Protocol):
    """An experiment tracker rank 0 logs to."""

    name: str

    def start(self, params: dict[str, Any], start_step: int) -> None: ...
    def log_metrics(self, step: int, metrics: dict[str, float]) -> None: ...
    def checkpoint(self) -> None: ...
    def finish(self, folder: Path | None, card: dict[str, Any]) -> None: ...


def trackers_for(cfg: TrainerConfig, local_dir: Path) -> list[Tracker]:
    """The trackers cfg.tracking names."""
    t = cfg.tracking
    out: list[Tracker] = []
    if t.mlflow is not None:
        from .mlflow import MlflowTracker

        out.append(MlflowTracker(t.mlflow, cfg.job))
    if t.tensorboard_uri is not None:
        from .tensorboard import TensorBoardTracker

        out.append(
            TensorBoardTracker(
                t.tensorboard_uri,
                t.tensorboard_storage,
                local_dir / f"tensorboard-{cfg.job.attempt}",
            )
        )
    if t.wandb is not None:
        from .wandb import WandbTracker

        out.append(WandbTracker(t.wandb, cfg.job, local_dir / "wandb"))
    return out


def step_metrics(
    loss: float | None,
    learning_rate: float | None,
    tokens_per_second: float,
    trained_tokens: int,
    epoch: float,
    grad_norm: float | None,
) -> dict[str, float]:
    """The per-step metrics every tracker gets (None ones left out)."""
    values = {
        "train/loss": loss,
        "train/learning_rate": learning_rate,
        "train/tokens_per_second": tokens_per_second,
        "train/trained_tokens": trained_tokens,
        "train/epoch": epoch,
        "train/grad_norm": grad_norm,
    }
    return {k: float(v) for k, v in values.items() if v is not None}


class Results:
    """Rank 0's events and trackers (empty elsewhere)."""

    def __init__(
        self, cfg: TrainerConfig, events: EventSink | None, trackers: list[Tracker]
    ) -> None:
        self.cfg, self.events, self.trackers = cfg, events, trackers
        self.evals_seen = 0
        self.committed_seen: int | None = None
        self.logged_step = -1  # the loop reports its last step twice (the final report)

    @classmethod
    def open(cls, cfg: TrainerConfig, is_main: bool, local_dir: Path) -> Results:
        """Events to the job (in a cluster) or the log (local runs); the spec's trackers."""
        if not is_main:
            return cls(cfg, None, [])
        in_cluster = cfg.reporting.progress_sink == "kubernetes"
        events: EventSink = (
            KubernetesEvents(cfg.job.name, cfg.job.namespace, cfg.job.uid)
            if in_cluster
            else LogEvents()
        )
        return cls(cfg, events, trackers_for(cfg, local_dir))

    def post(self, reason: str, message: str, warning: bool = False, routine: bool = False) -> None:
        """An event on the job (rank 0 only)."""
        if self.events is not None:
            self.events.post(reason, message, warning, routine)

    @contextlib.contextmanager
    def model_download(self, source: str) -> Iterator[None]:
        """Events around fetching the base model."""
        self.post("ModelDownloadStarted", f"downloading the base model {source}")
        began = time.monotonic()
        yield
        self.post(
            "ModelDownloaded", f"base model {source} ready in {time.monotonic() - began:.0f}s"
        )

    def _each(self, what: str, call: Any) -> None:
        """call(tracker) for every tracker; one that fails is switched off and reported."""
        for tracker in list(self.trackers):
            try:
                call(tracker)
            except Exception as e:
                self.trackers.remove(tracker)
                log.warning("%s tracking stopped: %s failed: %s", tracker.name, what, e)
                self.post(
                    "TrackingFailed",
                    f"{tracker.name}: {what} failed, no more logging to it: {e}",
                    warning=True,
                )

    def start(self, params: dict[str, Any], start_step: int) -> None:
        """Open (or continue) each tracker's run."""
        self._each("start", lambda t: t.start(params, start_step))

    def on_step(
        self,
        step: int,
        metrics: dict[str, float],
        evals: list[tuple[int, float]],
        committed: dict[str, Any] | None,
    ) -> None:
        """After every step: metrics to the trackers; an event per new evaluation and per new
        committed checkpoint (after which trackers make their logs durable)."""
        if not self.trackers and self.events is None:
            return
        for at, value in evals[self.evals_seen :]:
            self._each(
                "logging", lambda t, at=at, value=value: t.log_metrics(at, {"eval/loss": value})
            )
            best = min(evals, key=lambda e: (e[1], e[0]))
            self.post(
                "Evaluated",
                f"step {at}: eval loss {value:.4f} (lowest {best[1]:.4f} at step {best[0]})",
                routine=True,
            )
        self.evals_seen = len(evals)
        if step > self.logged_step:
            self.logged_step = step
            self._each("logging", lambda t: t.log_metrics(step, metrics))
        self.committed(committed)

    def committed(self, checkpoint: dict[str, Any] | None) -> None:
        """A newly committed checkpoint (rank 0's last_committed): an event, and the trackers
        make what they logged durable (flushed, uploaded). Once per checkpoint."""
        if not checkpoint or checkpoint.get("step") == self.committed_seen:
            return
        self.committed_seen = checkpoint.get("step")
        self.post(
            "CheckpointCommitted",
            f"step {checkpoint.get('step')}: {checkpoint.get('uri')} "
            f"({checkpoint.get('count', '?')} kept)",
            routine=True,
        )
        self._each("checkpoint upload", lambda t: t.checkpoint())

    def exported(self, folder: Path, card: dict[str, Any], step: int) -> dict[str, Any]:
        """After the export of `step`'s weights: registries, then the trackers' artifacts and
        end of run. Returns status.export: when it finished and what registries made of it."""
        out = self.cfg.output
        assert out is not None
        status: dict[str, Any] = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        where = f"{out.uri} (step {step})"
        self.post("ExportFinished", f"model written to {where}")
        if out.registry is not None:
            status["registered"] = self._register(folder, out.registry.name, where)
            self.post(
                "ModelRegistered", f"{out.registry.name} version {status['registered']['version']}"
            )
        if out.push is not None:
            from .hub_push import push

            status["pushed"] = push(folder, out.push, f"kubetune: {self.cfg.job.name}, {where}")
            self.post("PushedToHub", f"{out.push.repo} commit {status['pushed']['commit']}")
        self._each("finish", lambda t: t.finish(folder, card))
        return status

    def finished_without_export(self) -> None:
        """A run with no output: the trackers still end their runs."""
        self._each("finish", lambda t: t.finish(None, {}))

    def _register(self, folder: Path, name: str, where: str) -> dict[str, str]:
        """A new model version in the MLflow registry, linked to the job's run."""
        from ..errors import BadInputError
        from .mlflow import MlflowTracker

        run = next((t for t in self.trackers if isinstance(t, MlflowTracker)), None)
        if run is None:
            raise BadInputError(
                "spec.output.register: the job's MLflow run is unavailable (tracking.mlflow "
                "failed earlier: see the TrackingFailed event), so no version can be linked to it"
            )
        return run.register(folder, name, f"kubetune job {self.cfg.job.name}: {where}")
