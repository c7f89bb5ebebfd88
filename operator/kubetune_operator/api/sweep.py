"""FineTuneSweep: a FineTuneJob template, a search space over its spec fields, and how many
trials to run how, with early termination of clearly losing trials.

Each trial is an ordinary FineTuneJob owned by the sweep (so queues, quotas and every run policy
apply to it). Cross-field rules are written as CEL for the apiserver and repeated by
`sweep_problems` for offline use, with the same messages.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    field_validator,
    model_validator,
)

from kubetune_operator.api.constants import MAX_SWEEP_NAME_LENGTH
from kubetune_operator.api.guards import cel_rules, rule
from kubetune_operator.api.spec import JOB_NAME_PATTERN, ApiModel
from kubetune_operator.api.status import Condition
from kubetune_operator.api.template import JobTemplate, parameter_kinds, parameter_paths

MAX_TRIALS = 1000
MAX_VALUES = 64
MAX_PARAMETERS = 16

_GRID_NEEDS_VALUES = "spec.parameters: algorithm grid needs values or choices for every parameter"
_RANDOM_NEEDS_MAX_TRIALS = "spec.maxTrials is required with algorithm random"
_UNIQUE_PATHS = "spec.parameters: each path may appear once"
_TERMINATION_NEEDS_EVALS = (
    "spec.earlyTermination needs periodic evaluations: set "
    "spec.template.spec.training.evalEverySteps"
)
_TERMINATION_NEEDS_EVAL_LOSS = "spec.earlyTermination needs spec.objective.metric evalLoss"
_EVAL_LOSS_NEEDS_VALIDATION = (
    "spec.objective.metric evalLoss needs validation data: set "
    "spec.template.spec.dataset.validation or validationSplit"
)


def _fits_field_rules() -> list[dict[str, str]]:
    """One CEL rule per sweepable path: the values, choices or range fit that field's type
    and bounds, as the FineTuneJob schema states them."""
    return [
        rule(f"self.path != '{path}' || ({kind.cel()})", kind.message(path))
        for path, kind in parameter_kinds().items()
    ]


_ONE_KIND = "spec.parameters[]: set exactly one of values, choices, or min and max"


class SweepParameter(ApiModel):
    """One spec field to vary: numbers (values) or a range for a numeric field, choices for an
    enumerated or boolean one."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            rule(
                "[has(self.values), has(self.choices), has(self.min) || has(self.max)]"
                ".filter(x, x).size() == 1",
                _ONE_KIND,
            ),
            rule(
                "has(self.min) == has(self.max)",
                "spec.parameters[]: min and max go together",
                ".max",
            ),
            rule(
                "!has(self.min) || self.min < self.max",
                "spec.parameters[]: min must be less than max",
                ".max",
            ),
            rule(
                "!has(self.min) || self.scale != 'log' || self.min > 0.0",
                "spec.parameters[]: scale log needs min > 0",
                ".min",
            ),
            *_fits_field_rules(),
        )
    )

    path: str = Field(
        description="The spec field, as spelled in the manifest below spec: "
        "training.learningRate, method.lora.r, training.warmupRatio, ... (any numeric, boolean "
        "or enumerated field).",
        json_schema_extra={"enum": list[JsonValue](parameter_paths())},
    )
    values: list[float] | None = Field(
        None,
        description="Numbers to try (grid) or draw from (random), for a numeric field.",
        min_length=1,
        max_length=MAX_VALUES,
    )
    choices: list[str] | None = Field(
        None,
        description='Values to try or draw from for an enumerated field, or "true" and '
        '"false" for a boolean one.',
        min_length=1,
        max_length=MAX_VALUES,
        json_schema_extra={"items": {"type": "string", "maxLength": 256}},
    )
    min: float | None = Field(None, description="Lower bound of a range (random search).")
    max: float | None = Field(None, description="Upper bound of a range (random search).")
    scale: Literal["linear", "log"] = Field(
        "linear",
        description="How a range is sampled: uniformly, or uniformly in its logarithm (learning "
        "rates). Integer fields get whole numbers.",
    )

    @field_validator("path")
    @classmethod
    def _known_path(cls, value: str) -> str:
        if value not in parameter_paths():
            raise ValueError(
                f"{value!r} is not a numeric, boolean or enumerated spec field; "
                f"one of: {', '.join(parameter_paths())}"
            )
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> SweepParameter:
        """Offline twin of the CEL rules above (same messages)."""
        given = [self.values is not None, self.choices is not None]
        given.append(self.min is not None or self.max is not None)
        if sum(given) != 1:
            raise ValueError(_ONE_KIND)
        if (self.min is None) != (self.max is None):
            raise ValueError("spec.parameters[]: min and max go together")
        if self.min is not None and self.max is not None:
            if self.min >= self.max:
                raise ValueError("spec.parameters[]: min must be less than max")
            if self.scale == "log" and self.min <= 0:
                raise ValueError("spec.parameters[]: scale log needs min > 0")
        kind = parameter_kinds()[self.path]
        in_range = self.min is None or (
            self.max is not None and kind.range_accepts(self.min, self.max)
        )
        if not (kind.accepts(self.values, self.choices) and in_range):
            raise ValueError(kind.message(self.path))
        return self

    def options(self) -> list[Any]:
        """The values or choices, as the spec field takes them (whole numbers as int, "true"
        as True)."""
        kind = parameter_kinds()[self.path]
        return [
            kind.typed(v) for v in (self.values if self.values is not None else self.choices or [])
        ]

    @property
    def listed(self) -> bool:
        """Whether the parameter lists its options (grid-able) rather than giving a range."""
        return self.values is not None or self.choices is not None


class Objective(ApiModel):
    """What makes a trial best."""

    metric: Literal["evalLoss", "loss"] = Field(
        "evalLoss",
        description="evalLoss: the eval loss of the exported model (the last evaluation's, or "
        "the best one's with training.earlyStopping); loss: the final training loss.",
    )
    goal: Literal["minimize", "maximize"] = Field("minimize", description="Lower or higher wins.")


class EarlyTermination(ApiModel):
    """Stop a trial that is clearly losing: the median stopping rule."""

    rule: Literal["median"] = Field(
        "median",
        description="median: a running trial whose best eval loss by step S is worse than the "
        "median of the completed trials' average eval loss up to step S is stopped.",
    )
    min_evals: int = Field(
        2,
        description="Evaluations (after step 0) a trial reports before it may be stopped.",
        ge=1,
        le=1000,
    )
    min_completed_trials: int = Field(
        3, description="Completed trials needed before any trial is stopped.", ge=1, le=MAX_TRIALS
    )


class FineTuneSweepSpec(ApiModel):
    """A search over FineTuneJob spec fields."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            rule(
                "self.algorithm != 'grid' || self.parameters.all(p, has(p.values) || has(p.choices))",
                _GRID_NEEDS_VALUES,
                ".parameters",
            ),
            rule(
                "self.algorithm != 'random' || has(self.maxTrials)",
                _RANDOM_NEEDS_MAX_TRIALS,
                ".maxTrials",
            ),
            rule(
                "self.parameters.all(p, self.parameters.exists_one(q, q.path == p.path))",
                _UNIQUE_PATHS,
                ".parameters",
            ),
            rule(
                "!has(self.earlyTermination) || (has(self.template.spec.training) && "
                "has(self.template.spec.training.evalEverySteps)) || "
                "self.parameters.exists(p, p.path == 'training.evalEverySteps')",
                _TERMINATION_NEEDS_EVALS,
                ".earlyTermination",
            ),
            rule(
                "!has(self.earlyTermination) || self.objective.metric == 'evalLoss'",
                _TERMINATION_NEEDS_EVAL_LOSS,
                ".earlyTermination",
            ),
            rule(
                "self.objective.metric != 'evalLoss' || has(self.template.spec.dataset.validation) "
                "|| has(self.template.spec.dataset.validationSplit)",
                _EVAL_LOSS_NEEDS_VALIDATION,
                ".objective.metric",
            ),
            rule("self == oldSelf", "spec is immutable once the sweep is created"),
        )
    )

    template: JobTemplate = Field(description="The FineTuneJob every trial starts from.")
    parameters: list[SweepParameter] = Field(
        description="The spec fields to vary.", min_length=1, max_length=MAX_PARAMETERS
    )
    algorithm: Literal["grid", "random"] = Field(
        "grid",
        description="grid: every combination of the values, in order (the first parameter "
        "varies slowest); random: each trial draws every parameter independently.",
    )
    seed: int = Field(0, description="Seed of random search: trial N's draw is fixed by it.", ge=0)
    max_trials: int | None = Field(
        None,
        description="Trials to run (default for grid: every combination).",
        ge=1,
        le=MAX_TRIALS,
    )
    parallelism: int = Field(1, description="Trials running at once.", ge=1, le=MAX_TRIALS)
    objective: Objective = Field(default_factory=Objective, description="What is optimised.")
    early_termination: EarlyTermination | None = Field(
        None, description="Stop clearly losing trials early (needs periodic evaluations)."
    )

    @model_validator(mode="after")
    def _cross_field(self) -> FineTuneSweepSpec:
        """Offline twin of the CEL rules above (same messages)."""
        for problem in sweep_problems(self):
            raise ValueError(problem)
        return self


def sweep_problems(spec: FineTuneSweepSpec) -> list[str]:
    """Every cross-field rule the CRD enforces with CEL, as messages (empty when valid)."""
    problems = []
    params = spec.parameters
    if spec.algorithm == "grid" and not all(p.listed for p in params):
        problems.append(_GRID_NEEDS_VALUES)
    if spec.algorithm == "random" and spec.max_trials is None:
        problems.append(_RANDOM_NEEDS_MAX_TRIALS)
    if len({p.path for p in params}) != len(params):
        problems.append(_UNIQUE_PATHS)
    if spec.early_termination is not None:
        swept = {p.path for p in params}
        if (
            spec.template.spec.training.eval_every_steps is None
            and "training.evalEverySteps" not in swept
        ):
            problems.append(_TERMINATION_NEEDS_EVALS)
        if spec.objective.metric != "evalLoss":
            problems.append(_TERMINATION_NEEDS_EVAL_LOSS)
    data = spec.template.spec.dataset
    if (
        spec.objective.metric == "evalLoss"
        and data.validation is None
        and data.validation_split is None
    ):
        problems.append(_EVAL_LOSS_NEEDS_VALIDATION)
    return problems


TrialPhase = Literal["Pending", "Running", "Succeeded", "Failed", "Terminated"]


class TrialStatus(ApiModel):
    """One trial: what it tries, where it is, how good it is."""

    name: str = Field(description="The trial's FineTuneJob.", max_length=63)
    index: int = Field(description="Trial number, from 0.")
    parameters: dict[str, Any] = Field(
        description="The values this trial sets, by path.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True, "type": "object"},
    )
    phase: TrialPhase = Field(
        description="Pending, Running, Succeeded, Failed, or Terminated (stopped early by the "
        "sweep as clearly losing)."
    )
    job_phase: str | None = Field(None, description="The FineTuneJob's own phase.", max_length=32)
    uid: str | None = Field(None, description="The trial job's uid, once seen.", max_length=64)
    step: int | None = Field(None, description="Optimizer steps done.")
    total_steps: int | None = Field(None, description="Optimizer steps planned.")
    eval_loss: float | None = Field(None, description="Latest eval loss.")
    objective: float | None = Field(None, description="The objective of a Succeeded trial.")
    best: bool | None = Field(None, description="true on the best trial.")
    output_uri: str | None = Field(None, description="Where its model is.", max_length=2048)
    message: str | None = Field(
        None, description="Why it failed or was terminated.", max_length=1024
    )


class BestTrial(ApiModel):
    """The winner so far."""

    trial: str = Field(description="The trial's name.", max_length=63)
    objective: float = Field(description="Its objective value.")
    parameters: dict[str, Any] = Field(
        description="Its parameter values, by path.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True, "type": "object"},
    )
    output_uri: str | None = Field(None, description="Where its model is.", max_length=2048)


class FineTuneSweepStatus(ApiModel):
    """Observed state of a FineTuneSweep, written by the operator."""

    phase: Literal["Running", "Succeeded", "Failed"] | None = Field(
        None, description="Running, Succeeded (at least one trial succeeded) or Failed."
    )
    message: str | None = Field(None, description="One line on what is happening.", max_length=4096)
    conditions: list[Condition] | None = Field(None, description="Conditions.", max_length=32)
    observed_generation: int | None = Field(None, description="metadata.generation acted on.")
    start_time: str | None = Field(None, description="When the first trial was made (RFC 3339).")
    completion_time: str | None = Field(None, description="When the last trial ended.")
    total_trials: int | None = Field(None, description="Trials the sweep runs in all.")
    summary: str | None = Field(
        None, description="Trials by state, for kubectl get.", max_length=128
    )
    trials: list[TrialStatus] | None = Field(
        None, description="Every trial made so far, in order.", max_length=MAX_TRIALS
    )
    best: BestTrial | None = Field(None, description="The best Succeeded trial.")


class SweepMeta(BaseModel):
    """The parts of a sweep's metadata kubetune reads."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    name: str = Field(min_length=1, max_length=MAX_SWEEP_NAME_LENGTH, pattern=JOB_NAME_PATTERN)
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None


class FineTuneSweep(BaseModel):
    """A whole FineTuneSweep manifest (status is ignored when parsing)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    api_version: Literal["kubetune.dev/v1alpha1"] = Field(
        "kubetune.dev/v1alpha1", alias="apiVersion"
    )
    kind: Literal["FineTuneSweep"] = "FineTuneSweep"
    metadata: SweepMeta
    spec: FineTuneSweepSpec
