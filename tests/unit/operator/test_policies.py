"""The pure parts of the run policies: budgets, countdowns (one seconds_until for deadline,
TTL and stall), suspend, stall, clean-up."""

from __future__ import annotations

import pytest

from kubetune_operator.reconcile.observe import worker_from_pod
from kubetune_operator.reconcile.policies import backoff, cleanup, deadline, stall, suspend
from kubetune_operator.reconcile.timeutil import format_time, parse_duration, seconds_until
from tests.unit.operator.helpers import T0, at, pod

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("restarts", "limit", "ok"), [(0, 0, False), (0, 1, True), (2, 3, True), (3, 3, False)]
)
def test_backoff(restarts: int, limit: int, ok: bool) -> None:
    assert backoff.may_restart(restarts, limit) is ok


@pytest.mark.parametrize(
    ("start", "limit", "now", "left"),
    [
        (T0, None, at(99), None),
        (None, 10, at(5), None),
        (T0, 10, at(4), 6.0),
        (T0, 10, at(12), -2.0),
    ],
)
def test_deadline(start, limit, now, left) -> None:  # type: ignore[no-untyped-def]
    assert seconds_until(start, limit, now) == left


@pytest.mark.parametrize(
    ("ttl_s", "now", "left"), [(None, at(5), None), (0, at(0), 0.0), (60, at(10), 50.0)]
)
def test_ttl(ttl_s, now, left) -> None:  # type: ignore[no-untyped-def]
    assert seconds_until(T0, ttl_s, now) == left


@pytest.mark.parametrize(
    ("flag", "phase", "resuming"),
    [
        (False, "Suspended", True),
        (True, "Suspended", False),
        (False, "Running", False),
        (False, None, False),
    ],
)
def test_suspend(flag: bool, phase: str | None, resuming: bool) -> None:
    assert suspend.is_resuming(flag, phase) is resuming


@pytest.mark.parametrize(
    ("progress", "attempt", "started", "expected"),
    [
        (None, 1, None, None),
        ({"step": 0, "updatedAt": format_time(at(10))}, 1, None, None),  # before the first step
        ({"step": 3, "updatedAt": format_time(at(10))}, 1, None, at(10)),
        ({"step": 3, "updatedAt": format_time(at(10)), "attempt": 1}, 2, None, None),  # old attempt
        ({"step": 3, "updatedAt": format_time(at(10))}, 2, at(20), None),  # older than the pods
        ({"step": 3, "updatedAt": format_time(at(30)), "attempt": 2}, 2, at(20), at(30)),
    ],
)
def test_stall_last_progress(progress, attempt, started, expected) -> None:  # type: ignore[no-untyped-def]
    assert stall.last_progress(progress, attempt, started) == expected


def test_stall_countdown() -> None:
    assert seconds_until(None, 60, at(100)) is None
    assert seconds_until(at(0), 60, at(50)) == 10
    assert seconds_until(at(0), 60, at(61)) == -1


WORKERS = [
    worker_from_pod(pod(0, phase="Succeeded")),
    worker_from_pod(pod(1, phase="Failed", exit_code=1)),
    worker_from_pod(pod(2, phase="Running")),
    worker_from_pod(pod(3, phase="Running", deleting=True)),
]


@pytest.mark.parametrize(
    ("policy", "stop_unfinished", "expected"),
    [
        ("All", False, ["llama-lora-a1-0", "llama-lora-a1-1", "llama-lora-a1-2"]),
        ("Running", False, ["llama-lora-a1-2"]),
        ("None", False, []),
        ("None", True, ["llama-lora-a1-2"]),
    ],
)
def test_clean_pod_policy(policy: str, stop_unfinished: bool, expected: list[str]) -> None:
    assert cleanup.pods_to_delete(policy, WORKERS, stop_unfinished) == expected


@pytest.mark.parametrize(
    ("text", "seconds"), [("30m", 1800), ("1h30m", 5400), ("45s", 45), ("2.5s", 2.5)]
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10", "5d", "m30"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_deadline_counts_from_the_last_resume() -> None:
    assert deadline.counting_from(T0, None) == T0
    assert deadline.counting_from(T0, at(30)) == at(30)
    assert deadline.counting_from(None, at(30)) is None
