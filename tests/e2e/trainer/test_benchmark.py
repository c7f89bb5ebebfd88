"""`kubetune run` of a job with spec.benchmark: the trainer scores the benchmark on the weights
it starts from and on the ones it exports, and both numbers are what an independent evaluation
of those models gives (exact match by real greedy generation with transformers)."""

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

from kubetune_trainer import tiny

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.long]


def independent_scores(model_dir: Path, bench: Path) -> tuple[float, float]:
    """(eval loss over completion tokens, share of completions greedy decoding reproduces),
    from transformers alone: one record at a time, generation stopping at end of sequence."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    records = [json.loads(x) for x in bench.read_text().splitlines()]
    loss = tokens = right = 0.0
    with torch.no_grad():
        for r in records:
            prompt = [tok.bos_token_id, *tok(r["prompt"], add_special_tokens=False)["input_ids"]]
            answer = [
                *tok(r["completion"], add_special_tokens=False)["input_ids"],
                tok.eos_token_id,
            ]
            ids = torch.tensor([prompt + answer])
            logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1]
            loss += float(
                torch.nn.functional.cross_entropy(logits, ids[0, len(prompt) :], reduction="sum")
            )
            tokens += len(answer)
            out = model.generate(
                torch.tensor([prompt]), max_new_tokens=len(answer) + 2, do_sample=False,
                eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
            )  # fmt: skip
            right += out[0, len(prompt) :].tolist() == answer
    return loss / tokens, right / len(records)


def test_benchmark_is_scored_before_and_after_training(
    tmp_path: Path, tiny_base: Path, task_data: tuple[Path, Path]
) -> None:
    bench = tiny.write_jsonl(tmp_path / "bench.jsonl", tiny.synthetic_records(24, "B", seed=7))
    manifest = {
        "apiVersion": "kubetune.dev/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "bench"},
        "spec": {
            "model": {"source": f"file://{tiny_base}", "dtype": "float32"},
            "dataset": {"train": f"file://{task_data[0]}", "maxSeqLength": 64},
            "method": {"type": "full"},
            "training": {"maxSteps": 30, "learningRate": 1e-3, "microBatchSize": 8,
                         "globalBatchSize": 16, "precision": "fp32", "warmupRatio": 0.0},
            "resources": {"nodes": 2, "gpusPerNode": 0},
            "output": {"uri": f"file://{tmp_path / 'out'}", "format": "merged"},
            "benchmark": {"uri": f"file://{bench}", "exactMatch": True},
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
    result = card["benchmark"]
    import hashlib

    assert result["records"] == 24
    assert result["sha256"] == hashlib.sha256(bench.read_bytes()).hexdigest()
    before, after = result["before"], result["after"]
    base_loss, base_match = independent_scores(tiny_base, bench)
    tuned_loss, tuned_match = independent_scores(tmp_path / "out", bench)
    print(f"\nbenchmark before {before} (independent {base_loss:.5f}, {base_match:.3f}), "
          f"after {after} (independent {tuned_loss:.5f}, {tuned_match:.3f})")  # fmt: skip
    assert math.isclose(before["evalLoss"], base_loss, rel_tol=1e-4)
    assert math.isclose(after["evalLoss"], tuned_loss, rel_tol=1e-4)
    assert before["exactMatch"] == pytest.approx(base_match)
    assert after["exactMatch"] == pytest.approx(tuned_match)
    # The fine-tune learned task B: the scores moved, and measurably.
    assert (
        after["evalLoss"] < 0.5 * before["evalLoss"] and after["exactMatch"] > before["exactMatch"]
    )

    end = [json.loads(x) for x in (tmp_path / "run" / "progress.jsonl").read_text().splitlines()][
        -1
    ]
    assert end["event"] == "end" and end["benchmark"] == result
    assert (
        f"benchmark (24 records): eval loss {before['evalLoss']:.4f} -> {after['evalLoss']:.4f}"
        in run.stderr
    )
