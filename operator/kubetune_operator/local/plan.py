"""Turn the cluster Plan into the local one: paths on this machine, progress to a file.

Only what cannot be the same differs from a pod: where files live and where progress goes.
Relative file:// paths are taken from the current directory; pvc:// has no local meaning.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from kubetune_operator.api.spec import FineTuneJob
from kubetune_operator.reconcile.parse import InvalidSpec
from kubetune_operator.reconcile.plan import OperatorSettings, Plan, resolve
from kubetune_trainer.config import ReportingConfig
from kubetune_trainer.contract import CONFIG_FILE_NAME


def local_uri(uri: str | None, field: str, base: Path) -> str | None:
    """file://relative/path -> file:///abs/path; pvc:// is refused naming the field."""
    if uri is None:
        return None
    if uri.startswith("pvc://"):
        raise InvalidSpec(
            f"{field}: pvc:// is only available in a cluster; use file:// or s3:// locally"
        )
    if uri.startswith("file://"):
        path = Path(uri.removeprefix("file://"))
        return "file://" + str(path if path.is_absolute() else (base / path).resolve())
    return uri


def localize(plan: Plan, workdir: Path, base: Path, console: bool) -> Plan:
    """The Plan with local paths, a JSON-lines progress file and (optionally) a console bar."""
    cfg = plan.trainer_config
    model = cfg.model.model_copy(
        update={"source": local_uri(cfg.model.source, "spec.model.source", base)}
    )
    data = cfg.data.model_copy(
        update={
            "train": local_uri(cfg.data.train, "spec.dataset.train", base),
            "validation": local_uri(cfg.data.validation, "spec.dataset.validation", base),
        }
    )
    ckpt_update: dict[str, Any] = {"local_dir": str(workdir / "staging")}
    if cfg.checkpoint.uri:
        ckpt_update["uri"] = local_uri(cfg.checkpoint.uri, "spec.checkpoint.uri", base)
    if cfg.checkpoint.resume not in ("auto", "never"):
        ckpt_update["resume"] = local_uri(cfg.checkpoint.resume, "spec.checkpoint.resume", base)
    checkpoint = cfg.checkpoint.model_copy(update=ckpt_update)
    output = (
        cfg.output.model_copy(update={"uri": local_uri(cfg.output.uri, "spec.output.uri", base)})
        if cfg.output
        else None
    )
    tracking = cfg.tracking.model_copy(
        update={
            "tensorboard_uri": local_uri(
                cfg.tracking.tensorboard_uri, "spec.tracking.tensorboard", base
            )
        }
    )
    benchmark = (
        cfg.benchmark.model_copy(
            update={"uri": local_uri(cfg.benchmark.uri, "spec.benchmark.uri", base)}
        )
        if cfg.benchmark
        else None
    )
    reporting = ReportingConfig(
        progress_sink="file",
        progress_file=str(workdir / "progress.jsonl"),
        progress_interval_seconds=0.0,
        metrics_port=None,
        console=console,
    )
    config = cfg.model_copy(
        update={
            "model": model,
            "data": data,
            "checkpoint": checkpoint,
            "output": output,
            "reporting": reporting,
            "tracking": tracking,
            "benchmark": benchmark,
        }
    )
    return dataclasses.replace(plan, trainer_config=config)


def refuse_cluster_only(job: FineTuneJob) -> None:
    """pvc:// and ftj:// name cluster objects; say which field to change."""
    spec = job.spec
    uris = {
        "spec.model.source": spec.model.source,
        "spec.dataset.train": spec.dataset.train,
        "spec.dataset.validation": spec.dataset.validation,
        "spec.checkpoint.uri": spec.checkpoint.uri if spec.checkpoint else None,
        "spec.output.uri": spec.output.uri if spec.output else None,
    }
    for field, uri in uris.items():
        local_uri(uri, field, Path("/"))
    if spec.model.source.startswith("ftj://"):
        raise InvalidSpec(
            "spec.model.source: ftj:// needs a cluster; point at the other job's output URI"
        )


def local_plan(job: FineTuneJob, attempt: int, workdir: Path, base: Path, console: bool) -> Plan:
    """Resolve and localize attempt `attempt` of `job`."""
    refuse_cluster_only(job)
    return localize(resolve(job, attempt, OperatorSettings()), workdir, base, console)


def config_path(workdir: Path, attempt: int) -> Path:
    """Where the TrainerConfig of an attempt is written."""
    return workdir / f"attempt-{attempt}" / CONFIG_FILE_NAME
