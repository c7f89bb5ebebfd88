"""Per-job work queue: coalesces watch events into reconcile passes, one at a time per job.

Pod and job events both land here; a burst of them becomes one pass (plus one more if events
arrived during it). Time-driven work (deadlines, stall, TTL, retry after an error) is a timer on
the event loop: nothing is stored on the objects, so no finalizer is needed and a restarted
operator rebuilds every timer from its initial listing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from kubernetes.client import ApiException

from kubetune_operator import metrics

log = logging.getLogger(__name__)
Key = tuple[str, str]
MAX_BACKOFF = 60.0
# Passes in flight at once. A pass that starts an attempt holds its thread while the gang's
# pods are created; with 16, jobs submitted at 20/s waited 20 s (p50) for a thread at N=1000,
# with 32 about 8 s (bench/results/control_plane.md).
RECONCILE_WORKERS = 32


class Reconciler(Protocol):
    def reconcile(self, namespace: str, name: str) -> float | None: ...

    def dependents(self, namespace: str, name: str) -> list[str]: ...


class JobQueue:
    """Runs `reconciler.reconcile` for a job when kicked, never twice at once for the same job."""

    def __init__(self, reconciler: Reconciler, workers: int = RECONCILE_WORKERS) -> None:
        self.reconciler = reconciler
        # Passes of different jobs run side by side, at most `workers` at once; the
        # rest wait their turn here instead of piling onto the API server.
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="reconcile")
        self.running: set[Key] = set()
        self.dirty: set[Key] = set()
        self.timers: dict[Key, asyncio.TimerHandle] = {}
        self.errors: dict[Key, int] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.passes = 0

    async def kick(self, key: Key) -> None:
        """Reconcile `key` now, or right after the pass already running for it."""
        self.dirty.add(key)
        if key in self.running:
            return
        self.running.add(key)
        delay: float | None = None
        try:
            while key in self.dirty:
                self.dirty.discard(key)
                delay = await self._pass(key)
        finally:
            self.running.discard(key)
        self._schedule(key, delay)
        for other in self.reconciler.dependents(*key):
            self._fire((key[0], other))

    def forget(self, key: Key) -> None:
        """The job is gone: drop its timer."""
        timer = self.timers.pop(key, None)
        if timer:
            timer.cancel()
        self.errors.pop(key, None)
        metrics.record_phase(key[0], key[1], None)

    def close(self) -> None:
        """Cancel every timer (operator shutdown)."""
        for timer in self.timers.values():
            timer.cancel()
        self.timers.clear()
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def _pass(self, key: Key) -> float | None:
        self.passes += 1
        kicked = time.perf_counter()

        def run() -> float | None:
            metrics.QUEUE_SECONDS.observe(time.perf_counter() - kicked)
            return self.reconciler.reconcile(*key)

        try:
            loop = asyncio.get_running_loop()
            delay = await loop.run_in_executor(self.executor, run)
        except ApiException as err:
            if err.status == 409:  # someone wrote the job meanwhile: decide again on fresh data
                self.dirty.add(key)
                return None
            return self._failed(key, err)
        except Exception as err:
            return self._failed(key, err)
        self.errors.pop(key, None)
        return delay

    def _failed(self, key: Key, err: Exception) -> float:
        """Log, count, and retry with exponential backoff (1 s .. 60 s)."""
        n = self.errors.get(key, 0) + 1
        self.errors[key] = n
        metrics.RECONCILE_ERRORS.inc()
        log.error("reconcile of %s/%s failed (try %d): %s", key[0], key[1], n, err, exc_info=err)
        return min(2.0 ** (n - 1), MAX_BACKOFF)

    def _schedule(self, key: Key, delay: float | None) -> None:
        old = self.timers.pop(key, None)
        if old:
            old.cancel()
        if delay is None:
            return
        loop = asyncio.get_running_loop()
        self.timers[key] = loop.call_later(delay, self._fire, key)

    def _fire(self, key: Key) -> None:
        self.timers.pop(key, None)
        task = asyncio.ensure_future(self.kick(key))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
