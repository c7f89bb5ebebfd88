"""The work queue runs passes of different jobs side by side, but never more than its workers."""

from __future__ import annotations

import asyncio

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
