"""Kopf handlers of sweeps and schedules: thin and watch-driven, as the job handlers.

Every event of a sweep, a schedule, one of their jobs or a schedule's data-watch pod only kicks
the parent's reconcile queue; timers (the next cron time, the next listing) live in the queue.
Registered by importing this module (kubetune_operator.handlers does).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf

from kubetune_operator.api import constants as c
from kubetune_operator.apply import Writer
from kubetune_operator.lifecycle.controller import ScheduleController, SweepController
from kubetune_operator.lifecycle.reads import ParentReader
from kubetune_operator.queue import JobQueue, Key
from kubetune_operator.reconcile.plan import OperatorSettings

# Passes in flight at once for each kind: sweeps and schedules are few and light.
PARENT_WORKERS = 4


class ParentQueue(JobQueue):
    """A job queue for sweeps or schedules (they have no place in the jobs-by-phase gauge)."""

    def forget(self, key: Key) -> None:
        timer = self.timers.pop(key, None)
        if timer:
            timer.cancel()
        self.errors.pop(key, None)


@kopf.on.startup()
def lifecycle_startup(
    memo: Any, logger: logging.Logger | logging.LoggerAdapter[Any], **_: Any
) -> None:
    """Queues and controllers of sweeps and schedules in memo."""
    from kubetune_operator.handlers import api_client

    api = api_client(connections=2 * PARENT_WORKERS)
    reader, writer, settings = ParentReader(api), Writer(api), OperatorSettings.from_env()
    memo.sweeps = ParentQueue(SweepController(reader, writer, settings), PARENT_WORKERS)
    memo.schedules = ParentQueue(ScheduleController(reader, writer, settings), PARENT_WORKERS)
    logger.info("sweeps and schedules reconciled")


@kopf.on.cleanup()
def lifecycle_cleanup(memo: Any, **_: Any) -> None:
    memo.sweeps.close()
    memo.schedules.close()


async def _kick(queue: ParentQueue, type: str | None, namespace: str | None, name: str) -> None:
    key = (namespace or "default", name)
    if type == "DELETED":
        queue.forget(key)
        return
    await queue.kick(key)


@kopf.on.event(c.GROUP, c.VERSION, c.SWEEP_PLURAL)
async def sweep_event(
    type: str | None, name: str, namespace: str | None, memo: Any, **_: Any
) -> None:
    """Any change of a sweep, or the initial listing: reconcile it."""
    await _kick(memo.sweeps, type, namespace, name)


@kopf.on.event(c.GROUP, c.VERSION, c.SCHEDULE_PLURAL)
async def schedule_event(
    type: str | None, name: str, namespace: str | None, memo: Any, **_: Any
) -> None:
    """Any change of a schedule, or the initial listing: reconcile it."""
    await _kick(memo.schedules, type, namespace, name)


@kopf.on.event(c.GROUP, c.VERSION, c.PLURAL, labels={c.LABEL_SWEEP: kopf.PRESENT})
async def trial_event(
    labels: Mapping[str, str], namespace: str | None, memo: Any, **_: Any
) -> None:
    """A trial changed (phase, progress, gone): reconcile its sweep."""
    await memo.sweeps.kick((namespace or "default", labels[c.LABEL_SWEEP]))


@kopf.on.event(c.GROUP, c.VERSION, c.PLURAL, labels={c.LABEL_SCHEDULE: kopf.PRESENT})
async def run_event(labels: Mapping[str, str], namespace: str | None, memo: Any, **_: Any) -> None:
    """A run changed: reconcile its schedule."""
    await memo.schedules.kick((namespace or "default", labels[c.LABEL_SCHEDULE]))


@kopf.on.event("", "v1", "pods", labels={c.LABEL_SCHEDULE: kopf.PRESENT})
async def watch_pod_event(
    labels: Mapping[str, str], namespace: str | None, memo: Any, **_: Any
) -> None:
    """A data-watch pod changed (it finished: its listing is in): reconcile its schedule."""
    await memo.schedules.kick((namespace or "default", labels[c.LABEL_SCHEDULE]))
