"""The work queue runs passes of different jobs side by side, but never more than its workers."""

from __future__ import annotations

import asyncio
import time

import pytest

from kubetune_operator.queue import JobQueue
from tests.unit.operator.test_queue import Recorder

pytestmark = pytest.mark.unit


def test_passes_of_many_jobs_run_concurrently_up_to_the_worker_bound() -> None:
    rec = Recorder(delay=0.05)
    queue = JobQueue(rec, workers=3)

    async def burst() -> None:
        await asyncio.gather(*(queue.kick(("ns", f"job-{i}")) for i in range(12)))

    asyncio.run(burst())
    queue.close()
    assert len(rec.passes) == 12
    assert rec.max_active == 3


def test_an_urgent_pass_does_not_wait_behind_busy_workers() -> None:
    """Every regular worker is busy (say, creating other jobs' pods): the pass for a job whose
    worker just ended runs on the kept threads at once."""
    rec = Recorder(delay=0.3)
    queue = JobQueue(rec, workers=2, urgent_workers=1)

    async def scene() -> float:
        busy = [asyncio.ensure_future(queue.kick(("ns", f"slow-{i}"))) for i in range(6)]
        await asyncio.sleep(0.05)  # the two regular workers are taken, four passes queue
        started = time.perf_counter()
        await queue.kick(("ns", "finished"), urgent=True)
        took = time.perf_counter() - started
        await asyncio.gather(*busy)
        return took

    took = asyncio.run(scene())
    queue.close()
    assert took < 0.55, f"the urgent pass waited {took:.2f}s behind the busy workers"
    assert rec.passes.index(("ns", "finished")) < rec.passes.index(("ns", "slow-5"))
    assert not queue.urgent, "the urgent mark is spent by the pass"
