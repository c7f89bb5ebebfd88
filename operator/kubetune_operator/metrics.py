"""Operator Prometheus metrics: jobs by phase, reconcile duration, restarts, API errors."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from kubetune_operator.api.status import PHASES

JOBS = Gauge("kubetune_jobs", "FineTuneJobs seen by this operator, by phase.", ["phase"])
RECONCILE_SECONDS = Histogram(
    "kubetune_reconcile_duration_seconds",
    "Time of one reconcile pass of one job.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
QUEUE_SECONDS = Histogram(
    "kubetune_reconcile_queue_seconds",
    "Time a job waited between being kicked (event, timer) and its pass starting.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RESTARTS = Counter(
    "kubetune_job_restarts_total", "Attempts restarted after a failure, by reason.", ["reason"]
)
API_REQUESTS = Counter(
    "kubetune_api_requests_total",
    "API server calls made by the reconciler (watches excluded), by verb.",
    ["verb"],
)
API_ERRORS = Counter(
    "kubetune_api_errors_total", "Failed API server calls, by verb and status.", ["verb", "code"]
)
RECONCILE_ERRORS = Counter("kubetune_reconcile_errors_total", "Reconcile passes that raised.")

_phases: dict[tuple[str, str], str] = {}


def record_phase(namespace: str, name: str, phase: str | None) -> None:
    """Remember a job's phase (None: the job is gone) and move it between the by-phase gauges.

    Constant time per call: every reconcile pass calls this, so a count over all jobs here
    would make passes slower the more jobs there are.
    """
    key = (namespace, name)
    old = _phases.pop(key, None) if phase is None else _phases.get(key)
    if old == phase:
        return
    if phase is not None:
        _phases[key] = phase
        JOBS.labels(phase=phase).inc()
    if old is not None:
        JOBS.labels(phase=old).dec()


def _init_phase_gauges() -> None:
    """Every phase is exported from the start, at zero."""
    for p in PHASES:
        JOBS.labels(phase=p).set(0)


_init_phase_gauges()


@contextmanager
def api_call(verb: str) -> Iterator[None]:
    """Count an API call by verb, and by verb and HTTP status when it raises."""
    API_REQUESTS.labels(verb=verb).inc()
    try:
        yield
    except Exception as err:
        API_ERRORS.labels(verb=verb, code=str(getattr(err, "status", "") or "error")).inc()
        raise


@contextmanager
def timed_reconcile() -> Iterator[None]:
    """Observe the duration of one reconcile pass."""
    start = time.perf_counter()
    try:
        yield
    finally:
        RECONCILE_SECONDS.observe(time.perf_counter() - start)


def serve(port: int, addr: str = "0.0.0.0") -> None:
    """Expose /metrics (port 0 or below disables it)."""
    if port > 0:
        start_http_server(port, addr=addr)
