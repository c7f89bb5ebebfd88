"""`kubetune run` end to end, as a user runs it: the quickstart learns, exports and plots; a bad
record ends the run with its cause; a chat job shows its sample as chat.

What `make demo` does, in scratch directories (the manifests' file:// paths are relative), with
the real trainer under local torchrun agents. One tiny model is built for the module.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """runs/quickstart/{base,train.jsonl} as `make demo` builds them."""
    pytest.importorskip("deepspeed")
    root = tmp_path_factory.mktemp("tiny")
    base = root / "runs" / "quickstart"
    subprocess.run(
        [sys.executable, "-m", "kubetune_trainer.tiny", "--out", str(base / "base"),
         "--write-data", str(base / "train.jsonl"), "--data", str(base / "train.jsonl"), "--records", "512"],
        cwd=root, env=ENV, check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    return base


def in_scratch(tmp_path: Path, tiny: Path) -> Path:
    """A fresh directory holding runs/quickstart/{base,train.jsonl} (a copy of the tiny one)."""
    dest = tmp_path / "runs" / "quickstart"
    shutil.copytree(tiny / "base", dest / "base")
    shutil.copy(tiny / "train.jsonl", dest / "train.jsonl")
    return dest


def kubetune_run(cwd: Path, manifest: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kubetune_operator.cli", "run", manifest, "--quiet"],
        cwd=cwd, env=ENV, capture_output=True, text=True, timeout=900,
    )  # fmt: skip


def quickstart_with(tmp_path: Path, name: str, **spec: dict[str, object]) -> str:
    """The quickstart manifest with whole spec sections replaced, written as NAME.yaml."""
    doc = yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text())
    doc["metadata"]["name"] = name
    doc["spec"].update(spec)
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return f"{name}.yaml"


def test_quickstart_fine_tune_learns(tmp_path: Path, tiny: Path) -> None:
    base = in_scratch(tmp_path, tiny)
    shutil.copy(REPO / "examples" / "quickstart.yaml", tmp_path / "quickstart.yaml")
    run = kubetune_run(tmp_path, "quickstart.yaml")
    assert run.returncode == 0, run.stderr[-4000:]
    lines = [json.loads(x) for x in (base / "progress.jsonl").read_text().splitlines()]
    evals = [x["evalLoss"] for x in lines if "evalLoss" in x]
    assert evals[-1] < 0.5 * evals[0], f"eval loss did not fall enough: {evals[0]} -> {evals[-1]}"
    assert "eval loss:" in run.stderr and "(step 0, before training) ->" in run.stderr
    assert (base / "loss.png").stat().st_size > 5000
    assert (base / "model" / "config.json").exists()  # merged weights
    assert (base / "model" / "adapter" / "adapter_config.json").exists()
    assert "fine-tuned:" in run.stderr


def test_failed_run_ends_with_the_bad_record(tmp_path: Path, tiny: Path) -> None:
    """Line 5 of the data is cut off: the run ends with the file:line, not torchrun's report."""
    base = in_scratch(tmp_path, tiny)
    lines = (base / "train.jsonl").read_text().splitlines()
    lines[4] = '{"prompt": "map ka", "completion": '
    (base / "train.jsonl").write_text("\n".join(lines) + "\n")
    run = kubetune_run(tmp_path, quickstart_with(tmp_path, "baddata"))
    assert run.returncode == 1
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "train.jsonl:5: not valid JSON" in last, last
    assert "Traceback" not in run.stderr and "ChildFailedError" not in run.stderr, run.stderr


def test_chat_job_shows_its_sample_as_chat(tmp_path: Path, tiny: Path) -> None:
    """A chat-format job without periodic evaluations: its sample reads as chat turns, and its
    only eval loss (after training) is not called "before training"."""
    in_scratch(tmp_path, tiny)
    subprocess.run(
        [sys.executable, "-c", "from kubetune_trainer.tiny import synthetic_records, write_jsonl; "
         "write_jsonl('runs/quickstart/chat.jsonl', synthetic_records(64, 'B', 'chat'))"],
        cwd=tmp_path, env=ENV, check=True, timeout=120,
    )  # fmt: skip
    manifest = quickstart_with(
        tmp_path,
        "chat",
        dataset={
            "train": "file://runs/quickstart/chat.jsonl",
            "validationSplit": 0.1,
            "format": "chat",
            "maxSeqLength": 64,
        },
        training={"maxSteps": 4, "microBatchSize": 4, "precision": "fp32"},
        resources={"nodes": 1, "gpusPerNode": 0},
        checkpoint={"uri": "file://runs/chat/checkpoints", "everySteps": 100},
        output={"uri": "file://runs/chat/model", "format": "merged"},
    )
    run = kubetune_run(tmp_path, manifest)
    assert run.returncode == 0, run.stderr[-4000:]
    assert "prompt (chat):\n[kubetune]   system: cipher\n[kubetune]   user: map " in run.stderr
    assert "[{" not in run.stderr and "'role'" not in run.stderr, run.stderr[-2000:]
    assert "eval loss: " in run.stderr and "(step 4)" in run.stderr
    assert "before training" not in run.stderr
