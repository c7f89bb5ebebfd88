"""FineTuneJob status models.

The operator owns everything here except `progress`, `checkpoints`, `trainedTokens`, `export`,
`benchmark` and `dataSources`, which rank 0 of the trainer patches through the status subresource
(throttled) with its per-job ServiceAccount: only the trainer knows when a checkpoint is
committed, what pruning kept, what it exported and what the data and benchmark held, and the
operator never holds the store's credentials to find out.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from kubetune_operator.api.spec import ApiModel
from kubetune_trainer.contract import (
    MAX_LISTED_CHECKPOINTS,
    MAX_REPORTED_EVALS,
    MAX_REPORTED_SOURCES,
)

Phase = Literal[
    "Queued",
    "Pending",
    "Initializing",
    "Running",
    "Restarting",
    "Suspended",
    "Succeeded",
    "Failed",
]
PHASES: tuple[str, ...] = Phase.__args__  # type: ignore[attr-defined]
TERMINAL_PHASES = ("Succeeded", "Failed")

FailureReason = Literal[
    "OOMKilled",
    "GPUOutOfMemory",
    "Error",
    "Evicted",
    "Preempted",
    "NodeLost",
    "DeadlineExceeded",
    "BackoffLimitExceeded",
    "Stalled",
    "InvalidSpec",
    "PolicyViolation",
    "ImagePullError",
    "ContainerConfigError",
    "Unknown",
]


class Condition(ApiModel):
    """A Kubernetes-style condition (Created, Queued, Admitted, Preempted, Running, Suspended,
    Succeeded, Failed, Restarting, StartupError)."""

    type: str = Field(description="Condition type.", max_length=64)
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str | None = Field(None, description="CamelCase reason.", max_length=128)
    message: str | None = Field(None, description="Human-readable detail.", max_length=4096)
    last_transition_time: str | None = Field(
        None, description="When status last changed (RFC 3339)."
    )
    observed_generation: int | None = Field(
        None, description="metadata.generation this was computed for."
    )


class Failure(ApiModel):
    """Why the last attempt ended badly."""

    reason: FailureReason = Field(description="Failure class.")
    message: str | None = Field(
        None, description="Detail, e.g. the trainer's last error line.", max_length=4096
    )
    exit_code: int | None = Field(None, description="Exit code of the failed container.")
    pod: str | None = Field(None, description="The pod that failed first.", max_length=253)
    time: str | None = Field(None, description="When it was observed (RFC 3339).")
    attempt: int | None = Field(None, description="Attempt that failed.")


class PreferenceProgress(ApiModel):
    """Preference tuning (objective dpo): the reference used, and the implicit rewards of the last
    step's pairs and of the last evaluation's validation pairs (eval*)."""

    reference: Literal["precomputed", "adapter-disabled", "none"] | None = Field(
        None,
        description="precomputed: reference log-probabilities computed before the first step "
        "and kept with the checkpoints (full, partial, a continued adapter); adapter-disabled: "
        "the base with the adapter off (lora, qlora); none: reference-free (simpo).",
    )
    reward_chosen: float | None = Field(None, description="Mean reward of the chosen responses.")
    reward_rejected: float | None = Field(
        None, description="Mean reward of the rejected responses."
    )
    reward_margin: float | None = Field(None, description="Mean chosen minus rejected reward.")
    accuracy: float | None = Field(
        None, description="Fraction of pairs whose chosen reward is higher (ties count wrong)."
    )
    eval_reward_chosen: float | None = Field(None, description="rewardChosen on validation.")
    eval_reward_rejected: float | None = Field(None, description="rewardRejected on validation.")
    eval_reward_margin: float | None = Field(None, description="rewardMargin on validation.")
    eval_accuracy: float | None = Field(
        None, description="Preference accuracy on the validation pairs."
    )


class Progress(ApiModel):
    """Training progress, reported by rank 0 of the trainer."""

    step: int | None = Field(None, description="Optimizer steps done.")
    total_steps: int | None = Field(None, description="Optimizer steps planned.")
    epoch: float | None = Field(None, description="Fractional epoch.")
    percent: int | None = Field(
        None,
        description="step / totalSteps in percent; 100 once training stopped early.",
        ge=0,
        le=100,
    )
    summary: str | None = Field(
        None, description="step/totalSteps (percent%), for kubectl get.", max_length=64
    )
    loss: float | None = Field(None, description="Latest training loss (smoothed).")
    eval_loss: float | None = Field(None, description="Latest evaluation loss.")
    learning_rate: float | None = Field(None, description="Current learning rate.")
    tokens_per_second: float | None = Field(None, description="Training throughput, all ranks.")
    eta_seconds: int | None = Field(None, description="Estimated seconds to finish.")
    eta: str | None = Field(None, description="ETA, human readable (e.g. 1h12m).", max_length=32)
    updated_at: str | None = Field(None, description="When rank 0 last reported (RFC 3339).")
    attempt: int | None = Field(None, description="Attempt that reported this progress.")
    stopped_early: bool | None = Field(
        None,
        description="Training ended before totalSteps: the eval loss stopped improving "
        "(spec.training.earlyStopping).",
    )
    best_step: int | None = Field(
        None,
        description="Step of the best eval loss so far (with spec.training.earlyStopping or "
        "spec.output.select best).",
    )
    exported_step: int | None = Field(
        None,
        description="Step whose weights the output holds (reported when training ends): the "
        "best eval loss's with spec.training.earlyStopping or spec.output.select best, else "
        "the last.",
    )
    preference: PreferenceProgress | None = Field(
        None, description="Preference tuning metrics (objective dpo)."
    )
    evals: list[EvalPoint] | None = Field(
        None,
        description=f"Every evaluation of the run so far, oldest first (the latest "
        f"{MAX_REPORTED_EVALS}): what a FineTuneSweep's early termination compares.",
        max_length=MAX_REPORTED_EVALS,
    )


class EvalPoint(ApiModel):
    """One evaluation."""

    step: int = Field(description="Optimizer step it was made at.")
    loss: float = Field(description="Eval loss.")


class CheckpointRef(ApiModel):
    """A committed checkpoint."""

    uri: str = Field(description="Checkpoint URI.", max_length=2048)
    step: int = Field(description="Optimizer step it holds.")
    time: str | None = Field(None, description="When it was committed (RFC 3339).")


class CommittedCheckpoint(ApiModel):
    """One committed checkpoint the store keeps, with the losses at its step."""

    step: int = Field(description="Optimizer step it holds.")
    time: str | None = Field(None, description="When it was committed (RFC 3339).")
    train_loss: float | None = Field(None, description="Training loss of its step.")
    eval_loss: float | None = Field(
        None, description="Eval loss measured at its step (when an evaluation fell on it)."
    )
    uri: str = Field(description="Checkpoint URI (what `kubetune export` takes).", max_length=2048)
    best: bool | None = Field(
        None, description="true on the listed checkpoint with the lowest eval loss."
    )


class CheckpointStatus(ApiModel):
    """Checkpoints seen so far."""

    latest: CheckpointRef | None = Field(None, description="Newest committed checkpoint.")
    count: int | None = Field(
        None,
        description="Committed checkpoints kept in the store after pruning to spec.checkpoint.keepLast "
        "(written by the trainer with latest).",
    )
    committed: list[CommittedCheckpoint] | None = Field(
        None,
        description=f"The committed checkpoints the store keeps, newest first (at most "
        f"{MAX_LISTED_CHECKPOINTS}, the best by eval loss always among them).",
        max_length=MAX_LISTED_CHECKPOINTS,
    )


class RegisteredModel(ApiModel):
    """A model registry version created for the exported model."""

    name: str = Field(description="Registered model name.", max_length=256)
    version: str = Field(description="Version created by this job.", max_length=64)


class HubCommit(ApiModel):
    """A commit pushed to a Hugging Face Hub repository."""

    repo: str = Field(description="Repository id.", max_length=256)
    commit: str = Field(description="Commit id.", max_length=128)


class ExportStatus(ApiModel):
    """Where the exported model went beyond spec.output.uri (written by the trainer when the
    export finished; status.output.step names the step whose weights it holds)."""

    time: str | None = Field(None, description="When the export finished (RFC 3339).")
    registered: RegisteredModel | None = Field(None, description="spec.output.register result.")
    pushed: HubCommit | None = Field(None, description="spec.output.push result.")


class OutputStatus(ApiModel):
    """The exported model."""

    uri: str | None = Field(
        None, description="Where the fine-tuned model was written.", max_length=2048
    )
    step: int | None = Field(
        None,
        description="Optimizer step whose weights were written (the best eval loss's with "
        "spec.output.select best or spec.training.earlyStopping).",
    )


class BenchmarkScores(ApiModel):
    """One model's scores on the benchmark."""

    eval_loss: float | None = Field(None, description="Token-weighted eval loss.")
    exact_match: float | None = Field(
        None, description="Share of records whose completion is fully right (0-1)."
    )


class BenchmarkStatus(ApiModel):
    """spec.benchmark scored before and after training (written by the trainer at the end)."""

    uri: str | None = Field(None, description="The benchmark set.", max_length=2048)
    sha256: str | None = Field(None, description="Checksum of its files.", max_length=64)
    records: int | None = Field(None, description="Records scored.")
    before: BenchmarkScores | None = Field(
        None, description="The weights the job started from (the base, or the model continued)."
    )
    after: BenchmarkScores | None = Field(None, description="The exported weights.")


class DataSource(ApiModel):
    """One data file a job trained on."""

    uri: str = Field(description="The file.", max_length=2048)
    sha256: str | None = Field(None, description="Its checksum.", max_length=64)
    records: int | None = Field(None, description="Records in it.")


class WorkerCounts(ApiModel):
    """Worker pods of the current attempt by state."""

    total: int | None = Field(None, description="Workers in the gang.")
    pending: int | None = Field(None, description="Pods not yet running.")
    ready: int | None = Field(None, description="Pods ready.")
    running: int | None = Field(None, description="Pods running.")
    succeeded: int | None = Field(None, description="Pods that exited 0.")
    failed: int | None = Field(None, description="Pods that failed.")


class FineTuneJobStatus(ApiModel):
    """Observed state of a FineTuneJob."""

    phase: Phase | None = Field(
        None,
        description="Queued (waiting for Kueue to admit the job), Pending, Initializing, "
        "Running, Restarting, Suspended, Succeeded or Failed.",
    )
    message: str | None = Field(None, description="One line on what is happening.", max_length=4096)
    conditions: list[Condition] | None = Field(None, description="Conditions.", max_length=32)
    observed_generation: int | None = Field(
        None, description="metadata.generation last acted on.", ge=0
    )
    start_time: str | None = Field(None, description="When the first attempt started (RFC 3339).")
    completion_time: str | None = Field(None, description="When the job finished (RFC 3339).")
    attempt: int | None = Field(None, description="Current attempt, starting at 1.", ge=1)
    restarts: int | None = Field(
        None, description="Attempts restarted after a failure or a preemption.", ge=0
    )
    preemptions: int | None = Field(
        None,
        description="Of the restarts, attempts ended by a preemption or an eviction (counted "
        "toward runPolicy.preemptionLimit, not backoffLimit).",
        ge=0,
    )
    last_failure: Failure | None = Field(None, description="Why the last attempt failed.")
    progress: Progress | None = Field(
        None, description="Training progress (written by the trainer)."
    )
    checkpoints: CheckpointStatus | None = Field(
        None,
        description="Committed checkpoints (written by the trainer when it commits one).",
    )
    output: OutputStatus | None = Field(None, description="The exported model.")
    trained_tokens: int | None = Field(
        None, description="Training tokens processed over all ranks and attempts (by the trainer)."
    )
    export: ExportStatus | None = Field(
        None, description="When the export finished and where it was registered or pushed."
    )
    workers: WorkerCounts | None = Field(None, description="Worker pods of the current attempt.")
    benchmark: BenchmarkStatus | None = Field(
        None, description="spec.benchmark's scores (written by the trainer when it ends)."
    )
    data_sources: list[DataSource] | None = Field(
        None,
        description="The data files trained on, with checksums (written by the trainer when "
        "it ends).",
        max_length=MAX_REPORTED_SOURCES,
    )
