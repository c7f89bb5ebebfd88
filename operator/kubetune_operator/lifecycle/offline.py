"""Sweeps and schedules checked and rendered without a cluster (`kubetune validate`, `render`).

The same functions the operator's passes use make the jobs here, so what is checked offline is
exactly what the operator would create: every trial of a sweep (random draws are fixed by the
seed), and a schedule's first run.
"""

from __future__ import annotations

from typing import Any

from kubetune_operator.api.schedule import FineTuneSchedule
from kubetune_operator.api.sweep import FineTuneSweep
from kubetune_operator.lifecycle import cron, search
from kubetune_operator.lifecycle.schedule import run_job
from kubetune_operator.lifecycle.sweep import trial_job


def sweep_trials(raw: dict[str, Any]) -> list[tuple[dict[str, Any] | None, str | None]]:
    """(job, None) or (None, why not) for every trial of a sweep manifest, in order.
    Raises pydantic's ValidationError for a bad manifest, ValueError for a grid too large."""
    sweep = FineTuneSweep.model_validate(raw)
    template = raw["spec"]["template"]
    return [
        trial_job(sweep, template, i, search.trial_parameters(sweep.spec, i))
        for i in range(search.total_trials(sweep.spec))
    ]


def schedule_first_run(raw: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """(the first run's job, None) or (None, why not) for a schedule manifest. Raises
    ValidationError for a bad manifest, ValueError for a bad cron schedule or time zone."""
    schedule = FineTuneSchedule.model_validate(raw)
    if schedule.spec.schedule is not None:
        cron.parse(schedule.spec.schedule, schedule.spec.time_zone)
    name = f"{schedule.metadata.name}-r1"
    return run_job(schedule, raw["spec"]["template"], name, None, None)


def problems(raw: dict[str, Any]) -> list[str]:
    """What is wrong with a sweep's trials or a schedule's runs (empty when nothing)."""
    if raw.get("kind") == "FineTuneSweep":
        return [why for _, why in sweep_trials(raw) if why]
    _, why = schedule_first_run(raw)
    return [why] if why else []
