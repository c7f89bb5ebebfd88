"""The quickstart end to end: `kubetune run examples/quickstart.yaml` learns, exports, plots.

What `make demo` does, in a scratch directory (the manifest's file:// paths are relative), with
the real trainer under two local torchrun agents.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


def test_quickstart_fine_tune_learns(tmp_path: Path) -> None:
    pytest.importorskip("deepspeed")
    shutil.copy(REPO / "examples" / "quickstart.yaml", tmp_path / "quickstart.yaml")
    env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    base = tmp_path / "runs" / "quickstart"
    subprocess.run(
        [sys.executable, "-m", "kubetune_trainer.tiny", "--out", str(base / "base"),
         "--write-data", str(base / "train.jsonl"), "--data", str(base / "train.jsonl"), "--records", "512"],
        cwd=tmp_path, env=env, check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    run = subprocess.run(
        [sys.executable, "-m", "kubetune_operator.cli", "run", "quickstart.yaml", "--quiet"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-4000:]
    lines = [json.loads(x) for x in (base / "progress.jsonl").read_text().splitlines()]
    evals = [x["evalLoss"] for x in lines if "evalLoss" in x]
    assert evals[-1] < 0.5 * evals[0], f"eval loss did not fall enough: {evals[0]} -> {evals[-1]}"
    assert "eval loss:" in run.stderr and "before training" in run.stderr
    assert (base / "loss.png").stat().st_size > 5000
    assert (base / "model" / "config.json").exists()  # merged weights
    assert (base / "model" / "adapter" / "adapter_config.json").exists()
    assert "fine-tuned:" in run.stderr
