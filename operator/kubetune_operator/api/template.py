"""A FineTuneJob template, as FineTuneSweep and FineTuneSchedule embed it, and the spec fields
a sweep may vary.

The template's spec is a FineTuneJobSpec (the same model, so the same schema, defaults and
cross-field rules, at admission and offline). Sweeps and schedules make their jobs from it by
setting fields by path, on the manifest as the user wrote it.
"""

from __future__ import annotations

import copy
import types
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, Field
from pydantic.fields import FieldInfo

from kubetune_operator.api.spec import ApiModel, FineTuneJobSpec

# Spec fields that are no hyper-parameter: suspend is the job's on/off switch.
NOT_SWEPT = frozenset({"runPolicy.suspend"})


class TemplateMeta(ApiModel):
    """Labels and annotations every job made from the template carries."""

    labels: dict[str, str] | None = Field(
        None, description="Labels of each job.", json_schema_extra={"maxProperties": 64}
    )
    annotations: dict[str, str] | None = Field(
        None, description="Annotations of each job.", json_schema_extra={"maxProperties": 64}
    )


class JobTemplate(ApiModel):
    """The FineTuneJob each trial or run starts from."""

    metadata: TemplateMeta | None = Field(None, description="Labels and annotations of the jobs.")
    spec: FineTuneJobSpec = Field(description="A FineTuneJob spec, checked like one.")


def _scalar(annotation: Any) -> Any:
    """The one non-None type of an optional annotation (X | None -> X)."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else None
    return annotation


@dataclass(frozen=True)
class FieldKind:
    """What a spec field takes: its type, bounds and choices, read off the model. A sweep gives
    numeric fields `values` (numbers) or a range, and enumerated and boolean fields `choices`
    (strings; "true" and "false" for booleans)."""

    type: Any  # int, float, bool, or a Literal
    bounds: tuple[tuple[str, float], ...] = ()  # (">", 0), ("<=", 1), ...

    @property
    def numeric(self) -> bool:
        return self.type in (int, float)

    @property
    def choices(self) -> tuple[str, ...]:
        if self.type is bool:
            return ("true", "false")
        return (
            tuple(str(v) for v in get_args(self.type)) if get_origin(self.type) is Literal else ()
        )

    def describe(self) -> str:
        """In words: "numbers > 0 and <= 1 (values, or min and max)", "one of ... (choices)"."""
        if not self.numeric:
            return "one of " + ", ".join(f"'{v}'" for v in self.choices) + " (as choices)"
        words = "whole numbers" if self.type is int else "numbers"
        limits = " and ".join(f"{op} {limit:g}" for op, limit in self.bounds)
        return f"{words} {limits}".strip() + " (as values, or min and max)"

    def message(self, path: str) -> str:
        """The error when a parameter's values, choices or range do not fit the field."""
        return f"spec.parameters[]: {path} takes {self.describe()}"

    def accepts(self, values: list[float] | None, choices: list[str] | None) -> bool:
        """Whether a parameter's values or choices fit the field (the offline twin of `cel`)."""
        if not self.numeric:
            return values is None and all(c in self.choices for c in choices or ())
        if choices is not None:
            return False
        return all(self._number_ok(v) for v in values or ())

    def range_accepts(self, low: float, high: float) -> bool:
        """Whether a range [low, high] fits the field (the offline twin of `cel`)."""
        return (
            self.numeric
            and self._number_ok(low, whole=False)
            and self._number_ok(high, whole=False)
        )

    def _number_ok(self, v: float, whole: bool = True) -> bool:
        if whole and self.type is int and v != int(v):
            return False
        return all(_OPS[op](v, limit) for op, limit in self.bounds)

    def cel(self) -> str:
        """CEL on a sweep parameter: its values, choices or range fit the field."""
        if not self.numeric:
            listed = ", ".join(f"'{v}'" for v in self.choices)
            return (
                f"!has(self.values) && !has(self.min) && "
                f"(!has(self.choices) || self.choices.all(v, v in [{listed}]))"
            )
        whole = " && v == double(int(v))" if self.type is int else ""
        each = " && ".join(f"v {op} {float(limit)!r}" for op, limit in self.bounds) or "true"
        low = " && ".join(f"self.min {op} {float(limit)!r}" for op, limit in self.bounds) or "true"
        high = " && ".join(f"self.max {op} {float(limit)!r}" for op, limit in self.bounds) or "true"
        return (
            f"!has(self.choices) && (!has(self.values) || self.values.all(v, {each}{whole})) && "
            f"(!has(self.min) || ({low} && {high}))"
        )

    def typed(self, value: Any) -> Any:
        """A parameter's value as the spec field takes it: 4.0 -> 4 for an integer field,
        "true" -> True for a boolean one."""
        if self.type is int:
            return int(value)
        if self.type is float:
            return float(value)
        if self.type is bool:
            return value == "true"
        return value


_OPS = {
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
}


def _bounds(info: FieldInfo) -> tuple[tuple[str, float], ...]:
    out = []
    for m in info.metadata:
        for attr, op in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            if getattr(m, attr, None) is not None:
                out.append((op, float(getattr(m, attr))))
    return tuple(out)


def _leaves(model: type[BaseModel], prefix: str) -> dict[str, FieldKind]:
    out: dict[str, FieldKind] = {}
    for name, info in model.model_fields.items():
        path = prefix + (info.alias or name)
        kind = _scalar(info.annotation)
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            out.update(_leaves(kind, path + "."))
        elif kind in (int, float, bool) or get_origin(kind) is Literal:
            out[path] = FieldKind(kind, _bounds(info))
    return out


@cache
def parameter_kinds() -> dict[str, FieldKind]:
    """Every numeric, boolean or enumerated field of a FineTuneJob spec by path (camelCase, as
    in the manifest: training.learningRate, method.lora.r), with what it takes."""
    return {p: k for p, k in _leaves(FineTuneJobSpec, "").items() if p not in NOT_SWEPT}


def parameter_paths() -> list[str]:
    """The paths a sweep parameter may name, in the spec's field order."""
    return list(parameter_kinds())


def is_integer_field(path: str) -> bool:
    """Whether the field at `path` takes whole numbers (a sampled value is rounded)."""
    return parameter_kinds()[path].type is int


def set_path(spec: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of a spec (a manifest's dict) with the field at `path` set, parents created."""
    out = copy.deepcopy(spec)
    node = out
    *parents, leaf = path.split(".")
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[leaf] = value
    return out


def under(uri: str, name: str) -> str:
    """A child location of a storage URI: <uri>/<name> (one folder per trial or run)."""
    return uri.rstrip("/") + "/" + name
