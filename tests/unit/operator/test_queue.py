"""The per-job work queue: bursts coalesce, one pass at a time per job, timers and retries."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from kubetune_operator.queue import JobQueue

pytestmark = pytest.mark.unit


class Recorder:
    """A reconciler that records its passes; optionally slow, failing, or asking to requeue."""

    def __init__(
        self, delay: float = 0.0, fail_times: int = 0, requeue: float | None = None
    ) -> None:
        self.delay, self.fail_times, self.requeue = delay, fail_times, requeue
        self.passes: list[tuple[str, str]] = []
        self.active = 0
        self.max_active = 0
        self.lock = threading.Lock()
        self.waiting: dict[str, list[str]] = {}

    def reconcile(self, namespace: str, name: str) -> float | None:
        with self.lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        time.sleep(self.delay)
        with self.lock:
            self.active -= 1
            self.passes.append((namespace, name))
        if self.fail_times:
            self.fail_times -= 1
            raise RuntimeError("apiserver unavailable")
        return self.requeue

    def dependents(self, namespace: str, name: str) -> list[str]:
        return self.waiting.get(name, [])


def test_a_burst_of_events_becomes_at_most_two_passes() -> None:
    rec = Recorder(delay=0.05)
    queue = JobQueue(rec)

    async def burst() -> None:
        await asyncio.gather(*(queue.kick(("ns", "a")) for _ in range(20)))

    asyncio.run(burst())
    assert 1 <= len(rec.passes) <= 2
    assert rec.max_active == 1


def test_requeue_after_runs_another_pass() -> None:
    rec = Recorder(requeue=0.05)
    queue = JobQueue(rec)

    async def go() -> None:
        await queue.kick(("ns", "a"))
        await asyncio.sleep(0.2)
        queue.close()

    asyncio.run(go())
    assert len(rec.passes) >= 2


def test_errors_are_retried_with_backoff() -> None:
    rec = Recorder(fail_times=1)
    queue = JobQueue(rec)

    async def go() -> None:
        await queue.kick(("ns", "a"))
        assert queue.errors == {("ns", "a"): 1}
        assert ("ns", "a") in queue.timers  # retry in 1 s
        await asyncio.sleep(1.3)
        queue.close()

    asyncio.run(go())
    assert len(rec.passes) == 2 and queue.errors == {}


def test_jobs_waiting_for_an_upstream_are_woken() -> None:
    rec = Recorder()
    rec.waiting = {"base": ["next"]}
    queue = JobQueue(rec)

    async def go() -> None:
        await queue.kick(("ns", "base"))
        await asyncio.sleep(0.1)

    asyncio.run(go())
    assert rec.passes == [("ns", "base"), ("ns", "next")]
