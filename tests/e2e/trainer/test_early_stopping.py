"""`kubetune run` of a job whose eval loss stops improving: early stopping ends it, the export
holds the best evaluation's weights (not the last), and the run card, the progress report and
the CLI summary say where it stopped and which step was exported."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from kubetune_trainer import data as data_mod
from kubetune_trainer import tiny
from kubetune_trainer.config import DataConfig

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# The exported weights evaluated here and by the trainer: the same fp32 ops, other batching.
SAME_EVAL = 1e-4


def independent_eval_loss(model_dir: Path, validation: Path, work: Path) -> float:
    """Token-weighted validation loss of an exported model, loaded with transformers, over the
    sequences the trainer builds from the same file."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    cfg = DataConfig(train=str(validation), validation=str(validation), max_seq_length=64)
    val = data_mod.build_dataset(tok, cfg, 42, work / "cache").validation
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    total = count = 0.0
    with torch.no_grad():
        for i in range(0, len(val), 8):
            batch = data_mod.collate(val[i : i + 8])
            logits = model(
                input_ids=batch["input_ids"], position_ids=batch.get("position_ids")
            ).logits
            labels = batch["labels"][:, 1:]
            total += float(
                torch.nn.functional.cross_entropy(
                    logits[:, :-1].reshape(-1, logits.size(-1)),
                    labels.reshape(-1),
                    ignore_index=data_mod.IGNORE,
                    reduction="sum",
                )
            )
            count += float((labels != data_mod.IGNORE).sum())
    return total / count


def test_early_stopping_exports_the_best_weights_and_announces_the_stop(
    tmp_path: Path, tiny_base: Path, task_data: tuple[Path, Path]
) -> None:
    # Train on task B, validate on task A (what the base was pre-trained on): the eval loss
    # soon only rises, and the best weights are an early step's.
    val_a = tiny.write_jsonl(tmp_path / "val-a.jsonl", tiny.synthetic_records(64, "A", seed=3))
    manifest = {
        "apiVersion": "kubetune.dev/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "early"},
        "spec": {
            "model": {"source": f"file://{tiny_base}", "dtype": "float32"},
            "dataset": {"train": f"file://{task_data[0]}", "validation": f"file://{val_a}",
                        "maxSeqLength": 64},
            "method": {"type": "full"},
            "training": {"maxSteps": 60, "evalEverySteps": 3, "learningRate": 1e-3,
                         "earlyStopping": {"patience": 2}, "microBatchSize": 8,
                         "globalBatchSize": 16, "precision": "fp32", "warmupRatio": 0.0},
            "resources": {"nodes": 2, "gpusPerNode": 0},
            "output": {"uri": f"file://{tmp_path / 'out'}", "format": "merged"},
        },
    }  # fmt: skip
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(manifest))
    env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "kubetune_operator.cli", "run", "job.yaml", "--quiet",
         "--workdir", str(tmp_path / "run")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-4000:]

    card: dict[str, Any] = json.loads((tmp_path / "out" / "kubetune_run.json").read_text())
    t = card["training"]
    evals = dict((int(s), v) for s, v in t["evals"])
    best = min(evals, key=lambda s: evals[s])
    assert t["stopped_early"] and t["steps"] < 60, t
    assert (t["best_step"], t["exported_step"]) == (best, best), (t, evals)
    assert t["steps"] == best + 2 * 3  # two evaluations without improvement
    last = max(evals)
    assert evals[last] > evals[best] * 1.01, evals  # the last weights are measurably worse

    # The export is the best evaluation's model: evaluated anew, it scores the best loss.
    again = independent_eval_loss(tmp_path / "out", val_a, tmp_path)
    assert math.isclose(again, evals[best], rel_tol=SAME_EVAL), (again, evals)

    # Progress ends in a final state, and the CLI says what happened.
    lines = [json.loads(x) for x in (tmp_path / "run" / "progress.jsonl").read_text().splitlines()]
    end = lines[-1]
    assert end["event"] == "end" and end["stoppedEarly"] is True
    assert (end["percent"], end["bestStep"], end["exportedStep"]) == (100, best, best)
    assert "eta" not in end and end["summary"] == f"{t['steps']}/60 (stopped early)"
    assert f"stopped early at step {t['steps']} of 60" in run.stderr
    assert f"exported the best weights: step {best}, eval loss {evals[best]:.4f}" in run.stderr
    print(
        f"\nstopped at step {t['steps']}, exported step {best}: evals {evals}, export re-evaluated {again:.5f}"
    )
