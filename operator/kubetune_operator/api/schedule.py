"""FineTuneSchedule: continuous retraining. A FineTuneJob template run on a cron schedule or
when new data lands under a prefix, each run continuing from the last promoted model, and a
quality gate that promotes a run's model only if it is not worse on a fixed benchmark.

Each run is an ordinary FineTuneJob owned by the schedule. The gate's numbers come from the run
itself: with spec.benchmark set, its trainer evaluates the benchmark on the weights it starts
from (the promoted model it continues) and on the weights it exports (the candidate).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from kubetune_operator.api.constants import MAX_SCHEDULE_NAME_LENGTH
from kubetune_operator.api.guards import cel_rules, rule
from kubetune_operator.api.spec import (
    DATA_URI_PATTERN,
    DURATION_PATTERN,
    JOB_NAME_PATTERN,
    ApiModel,
)
from kubetune_operator.api.status import BenchmarkScores, Condition, DataSource
from kubetune_operator.api.template import JobTemplate

# Five fields (minute hour day-of-month month day-of-week) or a macro, as CronJob takes them;
# lifecycle/cron.py checks each field.
CRON_PATTERN = (
    r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|"
    r"[^\s]+\s+[^\s]+\s+[^\s]+\s+[^\s]+\s+[^\s]+)$"
)
MAX_HISTORY = 100

_ONE_TRIGGER = "spec: set exactly one of schedule and trigger.newData"
_DEADLINE_NEEDS_CRON = "spec.startingDeadlineSeconds needs spec.schedule"
_EXACT_MATCH_MARGIN = "spec.gate.maxExactMatchDecrease needs spec.gate.exactMatch true"


class NewDataTrigger(ApiModel):
    """Start a run when the data under a prefix changes."""

    prefix: str = Field(
        description="s3://bucket/prefix/ to watch; each file or folder directly under it is one "
        "data drop (e.g. a dated folder). Read with spec.template.spec.dataset's credentials, "
        "endpoint and region, by a short-lived pod: the operator never holds store credentials.",
        pattern=r"^s3://[^\s]+$",
        max_length=1024,
    )
    poll_interval: str = Field(
        "5m",
        description="How often the prefix is listed. Go-style duration, e.g. 5m, 1h.",
        pattern=DURATION_PATTERN,
        max_length=32,
    )
    train_on: Literal["latest", "all"] = Field(
        "latest",
        description="latest: each run trains on the drop modified last (continuing the "
        "promoted model on the new data); all: on everything under the prefix.",
    )


class ScheduleTrigger(ApiModel):
    """Events that start a run (besides spec.schedule)."""

    new_data: NewDataTrigger = Field(description="New data under a prefix.")


class Gate(ApiModel):
    """The quality gate: what a run's model must not be worse at to be promoted."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            rule(
                "!has(self.maxExactMatchDecrease) || (has(self.exactMatch) && self.exactMatch)",
                _EXACT_MATCH_MARGIN,
                ".maxExactMatchDecrease",
            )
        )
    )

    benchmark: str = Field(
        description="A fixed benchmark set (.jsonl/.parquet file or folder, in the data's store "
        "and format), evaluated on the model a run starts from and the model it makes.",
        pattern=DATA_URI_PATTERN,
        max_length=1024,
    )
    max_eval_loss_increase: float = Field(
        0.0,
        description="How much higher the candidate's benchmark eval loss may be than the current "
        "model's and still be promoted (0: not worse at all).",
        ge=0,
    )
    exact_match: bool = Field(
        False,
        description="Also measure exact match: the share of benchmark records whose whole "
        "completion the model predicts greedily (prompt-completion or chat records).",
    )
    max_exact_match_decrease: float | None = Field(
        None,
        description="With exactMatch: how much lower (0-1) the candidate's exact match may be "
        "(default 0).",
        ge=0,
        le=1,
    )


class FineTuneScheduleSpec(ApiModel):
    """When to retrain, from what, and when to ship the result."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            rule("has(self.schedule) != has(self.trigger)", _ONE_TRIGGER),
            rule(
                "!has(self.startingDeadlineSeconds) || has(self.schedule)",
                _DEADLINE_NEEDS_CRON,
                ".startingDeadlineSeconds",
            ),
        )
    )

    schedule: str | None = Field(
        None,
        description="Cron schedule, as CronJob takes it: minute hour day-of-month month "
        "day-of-week (*, lists, ranges, steps, names) or @hourly, @daily, @weekly, @monthly, "
        "@yearly.",
        pattern=CRON_PATTERN,
        max_length=128,
    )
    time_zone: str | None = Field(
        None,
        description="IANA time zone of the schedule (default: UTC).",
        max_length=64,
        pattern=r"^[A-Za-z0-9_+\-/]+$",
    )
    starting_deadline_seconds: int | None = Field(
        None,
        description="A scheduled run that cannot start within this many seconds of its time "
        "(operator down, concurrencyPolicy Forbid) is skipped.",
        ge=1,
    )
    trigger: ScheduleTrigger | None = Field(
        None, description="Start runs on events instead of a clock."
    )
    concurrency_policy: Literal["Forbid", "Allow", "Replace"] = Field(
        "Forbid",
        description="A run is due while another is active: Forbid waits for it (the run "
        "starts when it ends, if still due), Replace deletes it, Allow runs both (the gate then "
        "compares with the model promoted meanwhile).",
    )
    suspend: bool = Field(
        False, description="true: start no runs (active ones finish and are gated)."
    )
    template: JobTemplate = Field(
        description="The FineTuneJob each run starts from. Runs continue from the last "
        "promoted model (the template's model.source for the first); their output and "
        "checkpoints go to <uri>/<run name>."
    )
    gate: Gate = Field(description="What a run must pass to be promoted.")
    history_limit: int = Field(
        10,
        description="Runs kept in status.runs, and finished run jobs kept (the promoted one "
        "always).",
        ge=1,
        le=MAX_HISTORY,
    )

    @model_validator(mode="after")
    def _cross_field(self) -> FineTuneScheduleSpec:
        """Offline twin of the CEL rules above (same messages)."""
        for problem in schedule_problems(self):
            raise ValueError(problem)
        return self


def schedule_problems(spec: FineTuneScheduleSpec) -> list[str]:
    """Every cross-field rule the CRD enforces with CEL, as messages (empty when valid)."""
    problems = []
    if (spec.schedule is None) == (spec.trigger is None):
        problems.append(_ONE_TRIGGER)
    if spec.starting_deadline_seconds is not None and spec.schedule is None:
        problems.append(_DEADLINE_NEEDS_CRON)
    if spec.gate.max_exact_match_decrease is not None and not spec.gate.exact_match:
        problems.append(_EXACT_MATCH_MARGIN)
    return problems


RunPhase = Literal["Pending", "Running", "Succeeded", "Failed"]


class RunRecord(ApiModel):
    """One run: why it started, on what, how its model scored, and whether it was promoted."""

    name: str = Field(description="The run's FineTuneJob.", max_length=63)
    trigger: str = Field(description="What started it.", max_length=256)
    scheduled_time: str | None = Field(None, description="Its cron time (RFC 3339).")
    data_uri: str | None = Field(
        None, description="The training data it was given.", max_length=2048
    )
    data_version: str | None = Field(
        None, description="Digest of the listing (keys, sizes, ETags) of that data.", max_length=64
    )
    data_sources: list[DataSource] | None = Field(
        None, description="The files it trained on, with checksums.", max_length=32
    )
    started_from: str | None = Field(
        None, description="The model it continued from.", max_length=2048
    )
    phase: RunPhase = Field(description="Pending, Running, Succeeded or Failed.")
    uid: str | None = Field(None, description="The run job's uid, once seen.", max_length=64)
    start_time: str | None = Field(None, description="When it was made (RFC 3339).")
    completion_time: str | None = Field(None, description="When it ended.")
    output_uri: str | None = Field(None, description="Where its model is.", max_length=2048)
    benchmark_sha256: str | None = Field(
        None, description="The benchmark's checksum.", max_length=64
    )
    candidate: BenchmarkScores | None = Field(None, description="Its model on the benchmark.")
    current: BenchmarkScores | None = Field(
        None, description="The model it was compared with, on the benchmark."
    )
    promoted: bool | None = Field(None, description="Whether the gate promoted its model.")
    reason: str | None = Field(None, description="Why (not) promoted.", max_length=1024)


class PromotedModel(ApiModel):
    """The model deployments should serve."""

    run: str = Field(description="The run that made it.", max_length=63)
    uri: str = Field(description="Where it is.", max_length=2048)
    time: str | None = Field(None, description="When it was promoted (RFC 3339).")
    scores: BenchmarkScores | None = Field(None, description="Its benchmark scores.")
    benchmark_sha256: str | None = Field(
        None, description="Checksum of the benchmark it was scored on.", max_length=64
    )


class DataWatch(ApiModel):
    """State of the new-data trigger."""

    seq: int | None = Field(None, description="Number of the latest data-watch pod.")
    last_poll_time: str | None = Field(None, description="When the latest listing started.")
    version: str | None = Field(None, description="Digest of the latest listing.", max_length=64)
    consumed: str | None = Field(
        None, description="The data version the latest run was started for.", max_length=64
    )
    pending: dict[str, Any] | None = Field(
        None,
        description="New data waiting for a run (concurrencyPolicy Forbid): uri and version.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True, "type": "object"},
    )
    message: str | None = Field(None, description="The latest listing's outcome.", max_length=1024)


class FineTuneScheduleStatus(ApiModel):
    """Observed state of a FineTuneSchedule, written by the operator."""

    phase: Literal["Active", "Suspended", "Failed"] | None = Field(
        None, description="Active, Suspended, or Failed (the spec cannot be acted on)."
    )
    message: str | None = Field(None, description="One line on what is happening.", max_length=4096)
    conditions: list[Condition] | None = Field(None, description="Conditions.", max_length=32)
    observed_generation: int | None = Field(None, description="metadata.generation acted on.")
    last_schedule_time: str | None = Field(
        None, description="The latest cron time a run was started for (RFC 3339)."
    )
    next_schedule_time: str | None = Field(None, description="The next cron time (RFC 3339).")
    next_run: int | None = Field(
        None, description="Number of the next run (names are <name>-r<N>)."
    )
    active: list[str] | None = Field(
        None, description="Runs not finished yet.", max_length=MAX_HISTORY
    )
    last_run: str | None = Field(
        None, description="The latest run, for kubectl get.", max_length=63
    )
    last_result: str | None = Field(
        None,
        description="The latest finished run's outcome: Promoted, Rejected or Failed.",
        max_length=16,
    )
    promoted: PromotedModel | None = Field(
        None, description="The promoted model: where deployments read it."
    )
    data: DataWatch | None = Field(None, description="The new-data trigger.")
    runs: list[RunRecord] | None = Field(
        None, description="History, oldest first (spec.historyLimit).", max_length=MAX_HISTORY
    )


class ScheduleMeta(BaseModel):
    """The parts of a schedule's metadata kubetune reads."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    name: str = Field(min_length=1, max_length=MAX_SCHEDULE_NAME_LENGTH, pattern=JOB_NAME_PATTERN)
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    creation_timestamp: str | None = Field(None, alias="creationTimestamp")


class FineTuneSchedule(BaseModel):
    """A whole FineTuneSchedule manifest (status is ignored when parsing)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    api_version: Literal["kubetune.dev/v1alpha1"] = Field(
        "kubetune.dev/v1alpha1", alias="apiVersion"
    )
    kind: Literal["FineTuneSchedule"] = "FineTuneSchedule"
    metadata: ScheduleMeta
    spec: FineTuneScheduleSpec
