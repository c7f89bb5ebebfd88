"""The whole GPU throughput benchmark in its CPU smoke mode: both variants of every config,
each group in its own DeepSpeed process, the report with both tables, loss parity and profiles."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import gpu_throughput
from bench._gpu import report, stats, tasks

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SCRIPT = Path(gpu_throughput.__file__)
# Its own op cache: builders with other compiler flags rebuild a shared one under it.
EXTENSIONS_DIR = Path.home() / ".cache" / "kubetune" / "torch_extensions-bench"


def test_smoke_run_writes_both_tables_and_parity(tmp_path: Path) -> None:
    """The whole benchmark on CPU at tiny shapes: every config measured for both variants."""
    env = dict(
        os.environ,
        DS_ACCELERATOR="cpu",
        OMP_NUM_THREADS="1",
        TORCH_EXTENSIONS_DIR=str(EXTENSIONS_DIR),
        PYTHONUNBUFFERED="1",
    )
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--out", str(tmp_path), "--budget-s", "200"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert {(r["task"], r["variant"]) for r in results if r["ok"]} == {
        (t.name, v)
        for g in tasks.tasks_for(True)
        for t in g
        for v in (("ours",) if t.compare_to else ("baseline", "ours"))
    }
    text = (tmp_path / "gpu_throughput.md").read_text()
    assert "| 1B full ZeRO-2 | 4 |" in text
    assert "| varlen 1B full ZeRO-2 | 4 |" in text
    assert "| 1B full ZeRO-0, ours only (baseline: 1B full ZeRO-2) | 4 |" in text
    compiled = report.pick(results, "1B full ZeRO-2, compiled layers, ours only", "ours")
    assert compiled and compiled["levers"]["applied_compile_layers"], compiled
    eager = report.pick(results, "1B full ZeRO-2", "ours")
    assert eager and not eager["levers"]["applied_compile_layers"], eager
    parity = [r for r in results if r["task"] == "parity"]
    gap = stats.relative_gap(parity[1]["losses"], parity[0]["losses"])
    assert gap < 1e-4, parity  # fp32 on CPU: packing with per-record positions = padding
    assert "max relative difference" in text
    profiled = {
        (r["task"], r["variant"]): r["profile"] for r in results if r["task"] in tasks.PROFILED
    }
    for (task, variant), p in profiled.items():
        assert "note" not in p, (task, variant, p)
        assert p["step_s"] > 0 and p["categories"] and p["top"], (task, variant, p)
        assert f"**{task}, {variant}** (micro-batch 4): step " in text
