"""Reconcile passes of sweeps and schedules: read, decide (pure), then write in a safe order.

The same order as a job's pass, for the same reason: the status (which trials or runs exist,
what was promoted) is written first, guarded by the resourceVersion the decision was made on;
only then are jobs and pods created or deleted. A pass that dies half-way is finished by the
next one, which finds the names it wrote down and creates what is missing (a create of a name
that exists is a no-op), so a restarted operator never makes a trial or run twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from kubetune_operator.api import constants as c
from kubetune_operator.api.schedule import FineTuneSchedule
from kubetune_operator.api.sweep import FineTuneSweep
from kubetune_operator.apply import Writer
from kubetune_operator.lifecycle import schedule as schedule_mod
from kubetune_operator.lifecycle import sweep as sweep_mod
from kubetune_operator.lifecycle.reads import ParentReader
from kubetune_operator.reconcile.conditions import set_condition
from kubetune_operator.reconcile.decision import Event
from kubetune_operator.reconcile.parse import InvalidSpec, describe_validation_error
from kubetune_operator.reconcile.plan import OperatorSettings
from kubetune_operator.reconcile.timeutil import format_time

log = logging.getLogger(__name__)
# Least time between two status writes of a sweep that only follow its trials' progress.
PROGRESS_INTERVAL = 10.0
Model = TypeVar("Model", bound=BaseModel)


def _now() -> datetime:
    return datetime.now(UTC)


def parse(model: type[Model], body: dict[str, Any]) -> Model:
    """The typed sweep or schedule from a raw object (status ignored); InvalidSpec naming the
    field when it cannot be acted on."""
    try:
        return model.model_validate({k: v for k, v in body.items() if k != "status"})
    except ValidationError as err:
        raise InvalidSpec(describe_validation_error(err)) from err


def parent_patch(current: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any] | None:
    """Merge patch from the current status to the desired one (the operator owns all of it)."""
    patch = {k: v for k, v in desired.items() if current.get(k) != v}
    patch.update({k: None for k in current if k not in desired})
    return patch or None


def progress_only(current: dict[str, Any], patch: dict[str, Any]) -> bool:
    """True when a patch changes nothing but the progress fields of existing trials."""
    if set(patch) != {"trials"}:
        return False
    old, new = current.get("trials") or [], patch["trials"] or []
    if len(old) != len(new):
        return False
    strip = sweep_mod.PROGRESS_ONLY
    return all(
        {k: v for k, v in a.items() if k not in strip}
        == {k: v for k, v in b.items() if k not in strip}
        for a, b in zip(old, new, strict=True)
    )


def invalid_status(
    status: dict[str, Any], generation: int | None, message: str, now: datetime
) -> dict[str, Any]:
    """Status of a sweep or schedule whose spec cannot be acted on: Failed, InvalidSpec."""
    now_s = format_time(now)
    st = {k: v for k, v in status.items() if v is not None}
    st.update(phase="Failed", message=message[:4096], observedGeneration=generation)
    st["conditions"] = set_condition(
        st.get("conditions") or [], "Failed", True, "InvalidSpec", message[:4096], now_s, generation
    )
    return st


class ParentController:
    """What sweep and schedule passes share: reading the parent, writing its status, events."""

    plural = ""

    def __init__(
        self,
        reader: ParentReader,
        writer: Writer,
        settings: OperatorSettings,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self.reader, self.writer, self.settings, self.clock = reader, writer, settings, clock
        self.written_at: dict[tuple[str, str], float] = {}

    def dependents(self, namespace: str, name: str) -> list[str]:
        """Nothing waits on a sweep or schedule (the job queue asks)."""
        return []

    def body(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The parent, or None when it is gone or going."""
        body = self.reader.parent(self.plural, namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            self.written_at.pop((namespace, name), None)
            return None
        return body

    def write_status(
        self, body: dict[str, Any], desired: dict[str, Any], may_wait: bool = False
    ) -> float | None:
        """Patch the status when it changed. A patch that only follows progress (`may_wait`)
        waits until PROGRESS_INTERVAL after the last write: returns the seconds to wait."""
        current = body.get("status") or {}
        patch = parent_patch(current, desired)
        if patch is None:
            return None
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        if may_wait and progress_only(current, patch):
            wait = self.written_at.get(key, float("-inf")) + PROGRESS_INTERVAL - time.monotonic()
            if wait > 0:
                return wait
        self.writer.patch_status(key[0], key[1], meta["resourceVersion"], patch, plural=self.plural)
        self.written_at[key] = time.monotonic()
        return None

    def post(self, body: dict[str, Any], events: list[Event]) -> None:
        for event in events:
            try:
                self.writer.post_event(body, event)
            except Exception:  # an event is a courtesy; never let it block the pass
                log.warning("could not post event %s", event.reason, exc_info=True)

    def fail_invalid(self, body: dict[str, Any], err: InvalidSpec) -> None:
        meta = body["metadata"]
        desired = invalid_status(
            body.get("status") or {}, meta.get("generation"), str(err), self.clock()
        )
        if (body.get("status") or {}).get("message") != desired["message"]:
            self.post(body, [Event("Warning", "InvalidSpec", str(err)[:1024])])
        self.write_status(body, desired)

    def create_jobs(self, jobs: list[dict[str, Any]]) -> None:
        for job in jobs:
            self.writer.create_job(job)


class SweepController(ParentController):
    """Reconciles FineTuneSweeps: trials created up to parallelism, losers stopped, best kept."""

    plural = c.SWEEP_PLURAL

    def reconcile(self, namespace: str, name: str) -> float | None:
        body = self.body(namespace, name)
        if body is None:
            return None
        try:
            sweep = parse(FineTuneSweep, body)
            trials = self.reader.jobs(namespace, c.LABEL_SWEEP, name, sweep.metadata.uid)
            d = sweep_mod.decide_sweep(
                sweep, body["spec"]["template"], body.get("status") or {}, trials, self.clock()
            )
        except (InvalidSpec, ValueError) as err:
            self.fail_invalid(body, InvalidSpec(str(err)))
            return None
        wait = self.write_status(body, d.status, may_wait=not (d.create or d.delete or d.events))
        self.post(body, d.events)
        for trial, uid in d.delete:
            self.writer.delete_job(namespace, trial, uid)
        self.create_jobs(d.create)
        return wait


class ScheduleController(ParentController):
    """Reconciles FineTuneSchedules: runs started on time or on new data, gated, promoted."""

    plural = c.SCHEDULE_PLURAL

    def reconcile(self, namespace: str, name: str) -> float | None:
        body = self.body(namespace, name)
        if body is None:
            return None
        try:
            schedule = parse(FineTuneSchedule, body)
            uid = schedule.metadata.uid
            runs = self.reader.jobs(namespace, c.LABEL_SCHEDULE, name, uid)
            pods = self.reader.pods(namespace, c.LABEL_SCHEDULE, name, uid)
            d = schedule_mod.decide_schedule(
                schedule,
                body["spec"]["template"],
                body.get("status") or {},
                runs,
                pods,
                self.clock(),
                self.settings,
            )
        except (InvalidSpec, ValueError) as err:
            self.fail_invalid(body, InvalidSpec(str(err)))
            return None
        self.write_status(body, d.status)
        self.post(body, d.events)
        for run, uid in d.delete_jobs:
            self.writer.delete_job(namespace, run, uid)
        for pod in d.delete_pods:
            self.writer.delete_pod(namespace, pod)
        self.create_jobs(d.create_jobs)
        for pod_body in d.create_pods:
            self.writer.create(pod_body)
        return d.requeue_after
