"""The jobs-by-phase gauge follows each job's latest phase, in constant time per update."""

from __future__ import annotations

import pytest

from kubetune_operator import metrics

pytestmark = pytest.mark.unit


def gauge(phase: str) -> float:
    return float(metrics.JOBS.labels(phase=phase)._value.get())


def test_jobs_move_between_phases_and_leave_when_gone() -> None:
    base = {p: gauge(p) for p in ("Pending", "Running", "Succeeded")}
    metrics.record_phase("ns", "a", "Pending")
    metrics.record_phase("ns", "b", "Pending")
    metrics.record_phase("ns", "a", "Running")
    metrics.record_phase("ns", "a", "Running")
    assert gauge("Pending") == base["Pending"] + 1
    assert gauge("Running") == base["Running"] + 1
    metrics.record_phase("ns", "a", "Succeeded")
    metrics.record_phase("ns", "b", None)
    metrics.record_phase("ns", "b", None)
    assert gauge("Pending") == base["Pending"]
    assert gauge("Running") == base["Running"]
    assert gauge("Succeeded") == base["Succeeded"] + 1
    metrics.record_phase("ns", "a", None)
    assert gauge("Succeeded") == base["Succeeded"]
