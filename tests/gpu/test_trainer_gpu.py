"""The real trainer on one CUDA GPU: bf16 full fine-tuning, LoRA and QLoRA, a few steps each.

Each run is `python -m kubetune_trainer` in its own process with a one-rank torchrun environment,
on a tiny Llama pre-trained briefly on task A and fine-tuned on the shifted task B.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not _cuda(), reason="needs a CUDA GPU")]

STEPS = 6


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny pre-trained base model and a task-B training file."""
    from kubetune_trainer import tiny

    root = tmp_path_factory.mktemp("gpu-trainer")
    data = tiny.write_jsonl(root / "train.jsonl", tiny.synthetic_records(256, "B", seed=1))
    # Built in its own process: other GPU tests patch the Llama classes with Liger's Triton
    # kernels process-wide, and those cannot run the CPU pre-training here.
    model = root / "base"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "kubetune_trainer.tiny",
            "--out",
            str(model),
            "--pretrain-steps",
            "40",
        ],
        check=True,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )
    return model, data


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_trainer(
    workdir: Path, model: Path, data: Path, method: str
) -> tuple[int, str, list[float]]:
    """Run the trainer for a few steps; (exit code, log, per-step losses from the progress file)."""
    workdir.mkdir(parents=True, exist_ok=True)
    cfg: dict[str, Any] = {
        "job": {"name": f"gpu-{method}"},
        "model": {"source": f"file://{model}", "dtype": "bfloat16"},
        "data": {"train": str(data), "max_seq_length": 128},
        "method": {"type": method, "lora_dropout": 0.0},
        "training": {"max_steps": STEPS, "learning_rate": 2e-3 if method == "full" else 1e-2,
                     "micro_batch_size": 4, "global_batch_size": 4, "warmup_ratio": 0.0,
                     "scheduler": "constant", "precision": "bf16"},
        "deepspeed": {"zero_stage": 2},
        "checkpoint": {"local_dir": str(workdir / "local")},
        "reporting": {"progress_file": str(workdir / "progress.jsonl")},
    }  # fmt: skip
    (workdir / "trainer.json").write_text(json.dumps(cfg))
    env = dict(
        os.environ,
        RANK="0",
        LOCAL_RANK="0",
        WORLD_SIZE="1",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(free_port()),
        KUBETUNE_LOG_LEVEL="INFO",
    )
    proc = subprocess.run(
        [sys.executable, "-m", "kubetune_trainer", "--config", str(workdir / "trainer.json")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    progress = workdir / "progress.jsonl"
    events = [json.loads(x) for x in progress.read_text().splitlines()] if progress.exists() else []
    by_step = {e["step"]: e.get("loss", math.nan) for e in events if e.get("event") == "step"}
    return proc.returncode, proc.stdout + proc.stderr, [by_step[k] for k in sorted(by_step)]


@pytest.mark.parametrize("method", ["full", "lora", "qlora"])
def test_trainer_runs_on_cuda(base: tuple[Path, Path], tmp_path: Path, method: str) -> None:
    """Every step reports a finite loss and the run exits 0; full and LoRA also learn."""
    if method == "qlora":
        pytest.importorskip("bitsandbytes")
    code, log, losses = run_trainer(tmp_path / method, *base, method)
    assert code == 0, log[-4000:]
    assert len(losses) == STEPS, (losses, log[-2000:])
    assert all(math.isfinite(x) for x in losses), losses
    if method in ("full", "lora"):
        assert min(losses[-2:]) < losses[0], losses
    assert "perf levers" in log, log[-2000:]
