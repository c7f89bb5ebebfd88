"""examples/dpo-lora.yaml end to end: `kubetune run` tunes a base that prefers the wrong answers
until it prefers the chosen ones, and says so in its summary; its sample signs off as the chosen
answers do.

What the example's header tells a user to do, in a scratch directory (the manifest's file://
paths are relative), with the real trainer under two local torchrun agents.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


def test_dpo_example_learns_the_preference(tmp_path: Path) -> None:
    pytest.importorskip("deepspeed")
    shutil.copy(REPO / "examples" / "dpo-lora.yaml", tmp_path / "dpo-lora.yaml")
    env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    work = tmp_path / "runs" / "dpo-lora"
    subprocess.run(
        [sys.executable, "-m", "kubetune_trainer.tiny", "--out", str(work / "base"),
         "--write-preference", str(work / "pairs.jsonl")],
        cwd=tmp_path, env=env, check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    run = subprocess.run(
        [sys.executable, "-m", "kubetune_operator.cli", "run", "dpo-lora.yaml", "--quiet"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-4000:]
    accuracy = re.search(
        r"preference accuracy \(validation\): (\d+)% \(step 0\) -> (\d+)%", run.stderr
    )
    assert accuracy, run.stderr[-3000:]
    assert int(accuracy[1]) <= 50 and int(accuracy[2]) >= 90, accuracy[0]
    assert "reference: adapter-disabled" in run.stderr
    last = json.loads((work / "progress.jsonl").read_text().splitlines()[-1])
    assert last["preference"]["evalRewardMargin"] > 0, last
    # the sample: the base ends on the fourth word of the chain, the tuned model signs off
    base = re.search(r"base: +'(.*)'", run.stderr)
    tuned = re.search(r"fine-tuned: +'(.*)'", run.stderr)
    assert base and tuned, run.stderr[-3000:]
    assert base[1].split()[-1] != "ba" and tuned[1].split()[-1:] == ["ba"], (base[0], tuned[0])
    assert (work / "model" / "adapter" / "adapter_config.json").exists()
