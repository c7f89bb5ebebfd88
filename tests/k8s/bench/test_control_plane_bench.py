"""The control-plane benchmark end to end, tiny: both phases on kwok nodes, a results file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.binaries import REPO_ROOT

SCRIPT = REPO_ROOT / "bench" / "control_plane.py"


@pytest.mark.k8s
@pytest.mark.slow
def test_bench_runs_five_jobs_through_both_controllers(tmp_path: Path) -> None:
    out, data = tmp_path / "result.md", tmp_path / "result.json"
    env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    env.pop("KUBECONFIG", None)
    argv = [
        sys.executable, str(SCRIPT), "--jobs", "5", "--rate", "5", "--nodes", "10",
        "--timeout", "60", "--output", str(out), "--json", str(data),
    ]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=85)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    phases = json.loads(data.read_text())
    assert [p["name"] for p in phases] == ["Job controller (baseline)", "kubetune operator"]
    for p in phases:
        assert p["pods"] == 15
        assert p["create"]["count"] == 5, p
        assert p["status"]["count"] == 5, p
        assert 0 < p["create"]["p99"] < 30 and 0 <= p["status"]["p99"] < 30, p
        assert p["errors"] == {}, p
        assert p["requests"].get("POST", 0) >= 15, p
    assert p["peak_rss"] > 10 * 2**20
    table = out.read_text()
    assert "| kubetune operator | 5 | 15 |" in table
    assert "Ratio kubetune / Job controller" in table
