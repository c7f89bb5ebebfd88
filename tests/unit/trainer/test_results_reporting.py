"""Rank 0's results reporting without servers: MLflow params from the config, the event rate
limit, a failing tracker switched off without stopping training, the status patch and the model
card."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kubetune_trainer import progress
from kubetune_trainer.config import TrainerConfig
from kubetune_trainer.model_card import hub_base_model, render
from kubetune_trainer.tracking import Results
from kubetune_trainer.tracking.events import TokenBucket
from kubetune_trainer.tracking.mlflow import flat_params

pytestmark = pytest.mark.unit

CONFIG = TrainerConfig.model_validate(
    {
        "job": {"name": "j", "uid": "u"},
        "model": {"source": "hf://org/base@v1"},
        "data": {"train": "s3://d/t.jsonl"},
        "method": {"type": "lora"},
        "deepspeed": {"overrides": {"zero_optimization": {"reduce_bucket_size": 5e8}}},
        "output": {"uri": "s3://o/m"},
        "spec": {"model": {"source": "hf://org/base@v1"}},
    }
)


def test_params_are_the_resolved_config_without_identity_or_reporting() -> None:
    params = flat_params(CONFIG.model_dump(mode="json"))
    assert params["training.learning_rate"] == "0.0002" and params["method.type"] == "lora"
    assert params["method.target_modules"] == '["all-linear"]'
    assert (
        params["deepspeed.overrides"]
        == '{"zero_optimization": {"reduce_bucket_size": 500000000.0}}'
    )
    assert params["model.source"] == "hf://org/base@v1"
    assert not any(k.split(".")[0] in ("job", "reporting", "tracking", "spec") for k in params)


def test_token_bucket_allows_a_burst_then_the_refill_rate() -> None:
    now = [0.0]
    bucket = TokenBucket(burst=2, per_second=0.5, clock=lambda: now[0])
    assert [bucket.take() for _ in range(3)] == [True, True, False]
    now[0] = 1.0
    assert not bucket.take()  # half a token
    now[0] = 2.0
    assert bucket.take() and not bucket.take()


class Recorder:
    """An event sink and a tracker that remember what they got; `broken` fails every log."""

    name = "recorder"

    def __init__(self, broken: bool = False) -> None:
        self.broken, self.events, self.logged = broken, [], []  # type: ignore[var-annotated]

    def post(self, reason: str, message: str, warning: bool = False, routine: bool = False) -> None:
        self.events.append((reason, warning))

    def start(self, params: dict[str, Any], start_step: int) -> None: ...

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        if self.broken:
            raise ConnectionError("tracking server gone")
        self.logged.append((step, sorted(metrics)))

    def checkpoint(self) -> None:
        self.logged.append(("checkpoint", []))

    def finish(self, folder: Path, card: dict[str, Any]) -> None: ...


def test_each_new_evaluation_and_commit_is_posted_once_and_a_failing_tracker_is_dropped() -> None:
    sink, good, bad = Recorder(), Recorder(), Recorder(broken=True)
    results = Results(CONFIG, sink, [good, bad])
    results.on_step(1, {"train/loss": 2.0}, [(0, 3.0)], None)
    assert bad not in results.trackers and ("TrackingFailed", True) in sink.events
    commit = {"step": 2, "uri": "s3://c/step-00000002", "count": 1}
    results.on_step(2, {"train/loss": 1.5}, [(0, 3.0), (2, 2.5)], commit)
    results.on_step(3, {"train/loss": 1.4}, [(0, 3.0), (2, 2.5)], commit)
    reasons = [r for r, _ in sink.events]
    assert reasons.count("Evaluated") == 2 and reasons.count("CheckpointCommitted") == 1
    assert good.logged == [
        (0, ["eval/loss"]), (1, ["train/loss"]), (2, ["eval/loss"]), (2, ["train/loss"]),
        ("checkpoint", []), (3, ["train/loss"]),
    ]  # fmt: skip


def test_status_patch_carries_the_checkpoint_list_trained_tokens_and_export() -> None:
    from kubetune_operator.api.status import FineTuneJobStatus

    listed = [
        {
            "step": 20,
            "time": "t",
            "trainLoss": 0.5,
            "evalLoss": 0.7,
            "uri": "s3://c/s",
            "best": True,
        }
    ]
    p = progress.Progress(step=20, total_steps=20, epoch=1.0, trained_tokens=4096,
                          checkpoint={"step": 20, "uri": "s3://c/s", "count": 1, "committed": listed},
                          exported_step=20, export={"time": "t", "registered": {"name": "m", "version": "2"}})  # fmt: skip
    status = progress.status_patch(p)["status"]
    assert status["checkpoints"]["committed"] == listed and status["trainedTokens"] == 4096
    parsed = FineTuneJobStatus.model_validate(status)  # the CRD's models accept every field
    assert parsed.checkpoints is not None and parsed.checkpoints.committed is not None
    assert parsed.checkpoints.committed[0].best and parsed.export is not None
    assert (
        status["progress"]["exportedStep"] == 20
        and status["export"]["registered"]["version"] == "2"
    )


def test_model_card_names_the_hub_base_and_the_exported_step() -> None:
    assert hub_base_model("hf://org/base@v1/sub") == "org/base"
    assert hub_base_model("s3://b/m") is None
    card = {"job": {"name": "j"}, "model": {"source": "hf://org/base@v1"}, "method": {"type": "lora"},
            "output": {"format": "adapter"}, "training": {"steps": 40, "evals": [[0, 3.2]]},
            "export": {"step": 32, "select": "best", "eval_loss": 1.25}}  # fmt: skip
    text = render(card)
    assert text.startswith("---\n") and "base_model: org/base" in text
    assert "library_name: peft" in text and "| exported step | 32 (best) |" in text
    assert "| eval loss at that step | 1.2500 |" in text
