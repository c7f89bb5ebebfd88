"""What spec.model names is what trains: an earlier job's LoRA adapter (by ftj:// or by its s3://
URI) is continued, or merged for a full fine-tune, and the eval loss shows it; spec.model.dtype
that contradicts the precision is refused naming the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from kubetune_operator.api.spec import FineTuneJob
from kubetune_operator.local.plan import localize
from kubetune_operator.reconcile.plan import OperatorSettings, resolve
from kubetune_trainer.contract import EXIT_BAD_INPUT

from .harness import Run, config, launch
from .test_training import LOGIT_ATOL, reload_logits

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# The continued job's first eval runs the same weights on the same data as the first job's last
# eval, with the same ops on 2 ranks: only the order of a reduction may differ.
SAME_EVAL = 1e-5


@pytest.fixture(scope="module")
def first_job(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_base: Path,
    task_data: tuple[Path, Path],
    s3_server: Any,
) -> tuple[Run, str]:
    """A LoRA job (rank 8, so not the default shape) whose adapter output goes to S3."""
    bucket = "continuation"
    s3_server.client().create_bucket(Bucket=bucket)
    work = tmp_path_factory.mktemp("first")
    uri = f"s3://{bucket}/first-job"
    cfg = config(
        work, tiny_base, task_data,
        method={"type": "lora", "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.0},
        training={"learning_rate": 3e-3, "max_steps": 20, "eval_every_steps": 10},
        output={"uri": uri, "format": "adapter", "storage": {"endpoint": s3_server.endpoint}},
    )  # fmt: skip
    run = launch(work, cfg, s3_server.env())
    assert run.code == 0, run.log[-4000:]
    return run, uri


def evals(card: dict[str, Any]) -> dict[int, float]:
    return {int(s): v for s, v in card["training"]["evals"]}


def s3_card(s3_server: Any, uri: str) -> dict[str, Any]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    body = s3_server.client().get_object(Bucket=bucket, Key=f"{key}/kubetune_run.json")["Body"]
    return dict(json.loads(body.read()))


def second_job(
    work: Path, data: tuple[Path, Path], s3_endpoint: str, method: dict[str, Any]
) -> dict[str, Any]:
    """The TrainerConfig the operator renders for `ftj://first-job` once that job succeeded."""
    manifest = {
        "apiVersion": "kubetune.dev/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "second-job"},
        "spec": {
            "model": {"source": "ftj://first-job", "endpoint": s3_endpoint},
            "dataset": {"train": f"file://{data[0]}", "validation": f"file://{data[1]}",
                        "maxSeqLength": 64},
            "method": method,
            "training": {"maxSteps": 10, "evalEverySteps": 10, "learningRate": 3e-3,
                         "microBatchSize": 8, "globalBatchSize": 16, "precision": "fp32",
                         "warmupRatio": 0.1},
            "resources": {"nodes": 2, "gpusPerNode": 0},
            "output": {"uri": f"file://{work / 'out'}", "format": "adapter"
                       if method["type"] == "lora" else "merged"},
        },
    }  # fmt: skip
    return manifest


def render(manifest: dict[str, Any], upstream_output: str, work: Path) -> dict[str, Any]:
    job = FineTuneJob.model_validate(manifest)
    plan = resolve(job, 1, OperatorSettings(), upstream_output=upstream_output)
    cfg = localize(plan, work, work, console=False).trainer_config
    return dict(json.loads(cfg.to_json()))


def test_ftj_source_of_an_adapter_job_continues_that_adapter(
    tmp_path: Path,
    tiny_base: Path,
    task_data: tuple[Path, Path],
    s3_server: Any,
    first_job: tuple[Run, str],
) -> None:
    first = s3_card(s3_server, first_job[1])
    uri = first_job[1]
    before = evals(first)
    method = {"type": "lora", "lora": {"dropout": 0.0}}
    cfg = render(second_job(tmp_path, task_data, s3_server.endpoint, method), uri, tmp_path)
    assert cfg["model"]["source"] == uri  # ftj:// is the first job's output: the same path
    run = launch(tmp_path, cfg, s3_server.env())
    assert run.code == 0, run.log[-4000:]
    after = evals(run.card())
    # It starts where the first job ended, not from the base (which evaluates far worse).
    assert after[0] == pytest.approx(before[20], rel=SAME_EVAL), (before, after)
    assert before[0] > 1.5 * before[20]
    assert after[10] < after[0], after
    card = run.card()
    assert card["model"]["adapter"] == {"source": uri, "how": "continued"}
    assert card["model"]["base"]["source"] == f"file://{tiny_base}"
    assert card["model"]["base"] == first["model"]["base"]
    assert card["distributed"]["params_trainable"] == first["distributed"]["params_trainable"]

    # The adapter keeps its rank, names its base, and reproduces the engine on that base.
    out = tmp_path / "out"
    conf = json.loads((out / "adapter_config.json").read_text())
    assert (conf["r"], conf["lora_alpha"], conf["base_model_name_or_path"]) == (
        8,
        16,
        str(tiny_base),
    )
    probe = load_file(tmp_path / "probe.safetensors")
    logits = reload_logits(tiny_base, probe["input_ids"], adapter=out)
    assert torch.allclose(logits, probe["logits"], atol=LOGIT_ATOL)
    print(f"\nfirst job evals {before}; continued: {after}")


def test_full_fine_tune_of_an_adapter_source_trains_the_merged_model(
    tmp_path: Path,
    task_data: tuple[Path, Path],
    s3_server: Any,
    first_job: tuple[Run, str],
) -> None:
    uri = first_job[1]
    cfg = render(
        second_job(tmp_path, task_data, s3_server.endpoint, {"type": "full"}), uri, tmp_path
    )
    cfg["training"].update(max_steps=2, eval_every_steps=2)
    run = launch(tmp_path, cfg, s3_server.env())
    assert run.code == 0, run.log[-4000:]
    first = evals(s3_card(s3_server, uri))
    assert evals(run.card())[0] == pytest.approx(first[20], rel=SAME_EVAL)
    card = run.card()
    assert card["model"]["adapter"]["how"] == "merged"
    assert card["distributed"]["params_trainable"] == card["distributed"]["params_total"]


def test_model_dtype_contradicting_the_precision_exits_bad_input(
    tmp_path: Path, tiny_base: Path, task_data: tuple[Path, Path]
) -> None:
    cfg = config(tmp_path, tiny_base, task_data, model={"dtype": "bfloat16"})
    run = launch(tmp_path, cfg, timeout=180)
    assert run.code == EXIT_BAD_INPUT, run.log[-3000:]
    assert "spec.model.dtype bfloat16 contradicts spec.training.precision" in run.log
