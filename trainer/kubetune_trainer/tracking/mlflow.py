"""MLflow: one run per job, found again by a tag with the job's uid, so every attempt of a
restarted gang continues the same run. Params are the resolved config; metrics are buffered and
sent in batches; the run card and the loss curve (from the run's own metric history, which
spans all attempts) become artifacts; output.register adds a model version linked to the run.

Credentials come from the environment the MLflow client reads itself (MLFLOW_TRACKING_TOKEN,
or MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD), rendered from the secret. The
client's usage telemetry (calls to mlflow-telemetry.io) is off unless the job's env turns it on:
workers talk to the tracking server they were given, nothing else.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from ..config import JobRef, MlflowConfig
from .plot import Points, plot_losses

log = logging.getLogger("kubetune_trainer")

UID_TAG = "kubetune.job_uid"
LOSS, EVAL_LOSS = "train/loss", "eval/loss"
MAX_PARAM_VALUE = 6000  # MLflow refuses longer param values
PARAMS_PER_BATCH = 100  # and more params per request
# Sections of the config that are not hyper-parameters: the job's identity (tags), where the
# trainer reports, and the raw spec (in the run card artifact).
NOT_PARAMS = ("job", "reporting", "tracking", "spec")


def flat_params(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """The config as MLflow params: dotted keys, scalar values as text, lists and maps as JSON."""
    out: dict[str, str] = {}
    for key, value in config.items():
        if not prefix and key in NOT_PARAMS:
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and name != "deepspeed.overrides":
            out.update(flat_params(value, name + "."))
        else:
            text = value if isinstance(value, str) else json.dumps(value)
            out[name] = text[:MAX_PARAM_VALUE]
    return out


def uid_filter(uid: str) -> str:
    """The search filter that finds the job's run."""
    return f"tags.`{UID_TAG}` = '{uid}'"


class MlflowTracker:
    """Rank 0's MLflow run."""

    name = "mlflow"

    def __init__(self, cfg: MlflowConfig, job: JobRef, flush_seconds: float = 10.0) -> None:
        self.cfg, self.job, self.flush_seconds = cfg, job, flush_seconds
        self.client: Any = None
        self.run_id: str | None = None
        self.artifact_uri: str | None = None
        self.pending: list[Any] = []
        self.last_flush = time.monotonic()

    def start(self, params: dict[str, Any], start_step: int) -> None:
        """Create the job's run, or continue the one an earlier attempt created."""
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # read when mlflow is imported
        from mlflow import MlflowClient
        from mlflow.entities import Param

        self.client = c = MlflowClient(tracking_uri=self.cfg.tracking_uri)
        experiment = self._experiment_id()
        uid = self.job.uid or ""
        found = c.search_runs([experiment], uid_filter(uid), max_results=1) if uid else []
        if found:
            run = found[0]
            c.update_run(run.info.run_id, status="RUNNING")
        else:
            tags = {
                UID_TAG: uid,
                "kubetune.job": self.job.name,
                "kubetune.namespace": self.job.namespace,
            }
            run = c.create_run(experiment, run_name=self.cfg.run_name, tags=tags)
        self.run_id, self.artifact_uri = run.info.run_id, run.info.artifact_uri
        c.set_tag(self.run_id, "kubetune.attempt", str(self.job.attempt))
        items = sorted(flat_params(params).items())
        for i in range(0, len(items), PARAMS_PER_BATCH):
            c.log_batch(
                self.run_id, params=[Param(k, v) for k, v in items[i : i + PARAMS_PER_BATCH]]
            )
        log.info("mlflow run %s (%s)", self.run_id, "continued" if found else "created")

    def _experiment_id(self) -> str:
        """The experiment's id, created if missing (another job may create it meanwhile)."""
        from mlflow.exceptions import MlflowException

        c = self.client
        found = c.get_experiment_by_name(self.cfg.experiment)
        if found is not None:
            return str(found.experiment_id)
        try:
            return str(c.create_experiment(self.cfg.experiment))
        except MlflowException:
            return str(c.get_experiment_by_name(self.cfg.experiment).experiment_id)

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        """Buffer the step's metrics; send them every flush_seconds."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.pending += [Metric(k, float(v), now, step) for k, v in metrics.items()]
        if time.monotonic() - self.last_flush >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Send the buffered metrics."""
        batch, self.pending = self.pending, []
        self.last_flush = time.monotonic()
        for i in range(0, len(batch), 1000):
            self.client.log_batch(self.run_id, metrics=batch[i : i + 1000])

    def checkpoint(self) -> None:
        """A checkpoint was committed: what it covers is logged too."""
        self.flush()

    def finish(self, folder: Path | None, card: dict[str, Any]) -> None:
        """Run card (of an export) and loss curve as artifacts; the run is FINISHED."""
        self.flush()
        c = self.client
        if folder is not None:
            c.log_artifact(self.run_id, str(folder / "kubetune_run.json"))
        with tempfile.TemporaryDirectory() as tmp:
            train, evals = self.curve()
            png = plot_losses(train, evals, Path(tmp) / "loss.png", f"{self.job.name}: loss")
            if png is not None:
                c.log_artifact(self.run_id, str(png))
        c.set_terminated(self.run_id, "FINISHED")

    def curve(self) -> tuple[Points, Points]:
        """Train and eval loss of every attempt, from the run's metric history (latest value
        per step: a resumed attempt redoes the steps after its checkpoint)."""

        def points(key: str) -> Points:
            history = sorted(
                self.client.get_metric_history(self.run_id, key), key=lambda m: m.timestamp
            )
            return sorted({m.step: m.value for m in history}.items())

        return points(LOSS), points(EVAL_LOSS)

    def register(self, folder: Path, name: str, description: str) -> dict[str, str]:
        """The exported model as the run's `model` artifacts, and a new version of the
        registered model `name` made from them, linked to the run."""
        from mlflow.exceptions import MlflowException

        self.flush()
        c = self.client
        c.log_artifacts(self.run_id, str(folder), artifact_path="model")
        try:
            c.create_registered_model(name)
        except MlflowException as e:
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        version = c.create_model_version(
            name,
            source=f"{self.artifact_uri}/model",
            run_id=self.run_id,
            description=description,
            tags={"kubetune.job": self.job.name, UID_TAG: self.job.uid or ""},
        )
        return {"name": name, "version": str(version.version)}
