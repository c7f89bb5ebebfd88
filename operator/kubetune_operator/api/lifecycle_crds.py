"""The FineTuneSweep and FineTuneSchedule CRDs, built from their models like the FineTuneJob one.

Their templates embed the FineTuneJob spec schema with every rule of api/guards.py but the
immutability ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kubetune_operator.api import constants as c
from kubetune_operator.api import guards
from kubetune_operator.api.crd import custom_resource_definition, model_schema, name_rules
from kubetune_operator.api.schedule import FineTuneScheduleSpec, FineTuneScheduleStatus
from kubetune_operator.api.sweep import FineTuneSweepSpec, FineTuneSweepStatus


def spec_with_template(model: type, description: str) -> dict[str, Any]:
    """A sweep's or schedule's spec schema; its template's job spec carries every rule a job's
    spec does (api/guards.py) except immutability: a template is not a job (a schedule's
    template may change between runs; a sweep's whole spec is immutable by a rule of its own)."""
    schema = model_schema(model)
    template = schema["properties"]["template"]
    guards.attach(template["properties"]["spec"], [*guards.CROSS_FIELD, *guards.INPUT])
    schema["description"] = description
    return schema


def _status(model: type, description: str) -> dict[str, Any]:
    schema = model_schema(model)
    schema["description"] = description
    return schema


def _column(name: str, kind: str, path: str, description: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": kind, "jsonPath": path, "description": description, **extra}


SWEEP_COLUMNS: list[dict[str, Any]] = [
    _column("Phase", "string", ".status.phase", "Sweep phase."),
    _column("Trials", "string", ".status.summary", "Trials done of all, by outcome."),
    _column("Best", "string", ".status.best.trial", "The best trial so far."),
    _column("Objective", "number", ".status.best.objective", "Its objective value."),
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    _column("Algorithm", "string", ".spec.algorithm", "grid or random.", priority=1),
    _column("Parallelism", "integer", ".spec.parallelism", "Trials at once.", priority=1),
    _column("Output", "string", ".status.best.outputUri", "The best model.", priority=1),
]

SCHEDULE_COLUMNS: list[dict[str, Any]] = [
    _column("Schedule", "string", ".spec.schedule", "Cron schedule (empty: new-data trigger)."),
    _column("Suspend", "boolean", ".spec.suspend", "No new runs."),
    _column("Last-Run", "string", ".status.lastRun", "The latest run."),
    _column("Result", "string", ".status.lastResult", "Promoted, Rejected or Failed."),
    _column("Promoted", "string", ".status.promoted.run", "The run whose model is promoted."),
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    _column("Model", "string", ".status.promoted.uri", "Where the promoted model is.", priority=1),
    _column("Next", "string", ".status.nextScheduleTime", "The next cron time.", priority=1),
]


def build_sweep_crd() -> dict[str, Any]:
    """The FineTuneSweep CRD as a plain dict."""
    return custom_resource_definition(
        {
            "kind": c.SWEEP_KIND,
            "plural": c.SWEEP_PLURAL,
            "singular": c.SWEEP_SINGULAR,
            "shortNames": c.SWEEP_SHORT_NAMES,
        },
        "FineTuneSweep searches hyper-parameters: it runs FineTuneJobs (trials) made from a "
        "template with spec fields varied, stops clearly losing ones, and marks the best.",
        spec_with_template(
            FineTuneSweepSpec,
            "The template, the search space, how many trials run how, and the objective. "
            "Immutable after creation.",
        ),
        _status(FineTuneSweepStatus, "Observed state, written by the operator."),
        SWEEP_COLUMNS,
        name_rules(c.MAX_SWEEP_NAME_LENGTH, "trial job names <name>-t<N> derive from it"),
    )


def build_schedule_crd() -> dict[str, Any]:
    """The FineTuneSchedule CRD as a plain dict."""
    return custom_resource_definition(
        {
            "kind": c.SCHEDULE_KIND,
            "plural": c.SCHEDULE_PLURAL,
            "singular": c.SCHEDULE_SINGULAR,
            "shortNames": c.SCHEDULE_SHORT_NAMES,
        },
        "FineTuneSchedule retrains continuously: FineTuneJobs (runs) on a cron schedule or on "
        "new data, each continuing the promoted model, promoted only through a quality gate.",
        spec_with_template(
            FineTuneScheduleSpec, "When to retrain, from what template, and the quality gate."
        ),
        _status(FineTuneScheduleStatus, "Observed state, written by the operator."),
        SCHEDULE_COLUMNS,
        name_rules(c.MAX_SCHEDULE_NAME_LENGTH, "run job names <name>-r<N> derive from it"),
    )


BUILDERS: dict[str, Callable[[], dict[str, Any]]] = {
    c.SWEEP_PLURAL: build_sweep_crd,
    c.SCHEDULE_PLURAL: build_schedule_crd,
}
