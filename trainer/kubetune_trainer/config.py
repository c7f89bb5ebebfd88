"""TrainerConfig: the contract between the operator and the trainer.

The operator resolves a FineTuneJob into one of these (every default filled in, derived values
such as gradient accumulation computed) and hands it to each worker as JSON in a ConfigMap; the
local runner writes the same JSON to disk. The trainer reads nothing else but its environment
(torchrun's rendezvous variables and secrets). No torch import here: the operator imports it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .contract import StoreName


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StorageConfig(_Config):
    """Object-store connection; credentials come from the environment, never from here."""

    store: StoreName | None = Field(
        None,
        description="Which store this is: its keys are read from s3_credential_env(store) when "
        "set there, else from the default AWS chain (AWS_* env, profiles, instance roles).",
    )
    endpoint: str | None = Field(None, description="S3 endpoint URL (S3-compatible stores).")
    region: str | None = Field(None, description="S3 region.")


class ModelConfig(_Config):
    """The base model."""

    source: str = Field(
        description="Resolved model URI: hf://, s3://, file:// (pvc:// becomes file://)."
    )
    revision: str | None = Field(None, description="Hub revision for hf:// sources.")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto",
        description="dtype the weights are read in (model.load_dtype checks it against the "
        "precision; fp32 master weights come from DeepSpeed).",
    )
    trust_remote_code: bool = Field(False, description="Allow model repository code to run.")
    storage: StorageConfig = Field(
        default_factory=StorageConfig, description="Store connection for s3:// sources."
    )


class DataConfig(_Config):
    """Training and validation data."""

    train: str = Field(description="Training data URI (.jsonl/.parquet file or folder).")
    validation: str | None = Field(None, description="Validation data URI.")
    validation_split: float | None = Field(
        None, description="Held-out fraction when validation is unset."
    )
    format: Literal["auto", "prompt-completion", "chat", "text", "preference"] = Field(
        "auto", description="Record format."
    )
    max_seq_length: int = Field(
        2048, description="Tokens per sequence (truncation / packing length)."
    )
    packing: bool = Field(True, description="Pack records into full-length sequences.")
    storage: StorageConfig = Field(
        default_factory=StorageConfig, description="Store connection for s3:// data."
    )


PreferenceLoss = Literal["sigmoid", "ipo", "hinge", "robust", "simpo"]
"""DPO loss variants: sigmoid (DPO), ipo, hinge, robust (rDPO), simpo (reference-free)."""


class PreferenceConfig(_Config):
    """Preference tuning (objective dpo): the loss and its parameters."""

    beta: float = Field(
        0.1, description="Strength of the pull towards the reference (SimPO: scale)."
    )
    loss: PreferenceLoss = Field("sigmoid", description="Loss variant.")
    label_smoothing: float = Field(
        0.0, description="sigmoid/simpo: conservative DPO's label noise; robust: flip rate."
    )
    simpo_gamma: float = Field(0.5, description="simpo: target reward margin, over beta.")
    sft_weight: float = Field(
        0.0, description="Weight of the next-token loss on the chosen answers (RPO), added."
    )


class MethodConfig(_Config):
    """What trains."""

    type: Literal["full", "partial", "lora", "qlora"] = Field(description="Fine-tuning method.")
    objective: Literal["sft", "dpo"] = Field(
        "sft", description="sft: next-token loss; dpo: preference tuning on chosen/rejected pairs."
    )
    preference: PreferenceConfig = Field(
        default_factory=PreferenceConfig, description="Loss settings of objective dpo."
    )
    lora_r: int = Field(16, description="LoRA rank.")
    lora_alpha: int = Field(32, description="LoRA alpha.")
    lora_dropout: float = Field(0.05, description="LoRA dropout.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["all-linear"], description="LoRA targets."
    )
    use_dora: bool = Field(False, description="Use DoRA.")
    trainable_modules: list[str] | None = Field(
        None, description="partial: name substrings that train."
    )
    top_layers: int | None = Field(None, description="partial: last N layers train.")


class TrainingConfig(_Config):
    """Optimisation, resolved."""

    epochs: float | None = Field(None, description="Epochs (used when max_steps is None).")
    max_steps: int | None = Field(None, description="Optimizer steps; wins over epochs.")
    learning_rate: float = Field(2e-4, description="Peak learning rate.")
    scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = Field(
        "cosine", description="LR schedule."
    )
    warmup_ratio: float = Field(0.03, description="Warmup fraction of total steps.")
    weight_decay: float = Field(0.0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, description="Clipping norm; 0 disables.")
    micro_batch_size: int = Field(1, description="Sequences per rank per forward.")
    global_batch_size: int = Field(1, description="Sequences per optimizer step, all ranks.")
    gradient_accumulation_steps: int = Field(1, description="global / (micro x world size).")
    gradient_checkpointing: bool = Field(False, description="Activation checkpointing.")
    seed: int = Field(42, description="Seed for data order, splits, init.")
    eval_every_steps: int | None = Field(None, description="Evaluate every N steps.")
    early_stopping_patience: int | None = Field(
        None, description="Evals without improvement before stopping."
    )
    early_stopping_min_delta: float = Field(0.0, description="Improvement that counts.")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description="Training precision."
    )
    log_every_steps: int = Field(1, description="Metrics/progress update interval in steps.")


class DeepSpeedConfig(_Config):
    """DeepSpeed ZeRO."""

    zero_stage: int = Field(2, description="ZeRO stage 0-3.")
    offload_optimizer: Literal["none", "cpu", "nvme"] = Field(
        "none", description="Optimizer offload."
    )
    offload_parameters: Literal["none", "cpu", "nvme"] = Field(
        "none", description="Parameter offload."
    )
    nvme_path: str | None = Field(None, description="NVMe path for nvme offload.")
    overrides: dict[str, Any] = Field(default_factory=dict, description="Raw config merged last.")


class PerfConfig(_Config):
    """Throughput levers; the defaults are what measured fastest, each off where it cannot run."""

    liger_kernels: Literal["auto", "on", "off"] = Field(
        "auto", description="Liger's fused RMSNorm/RoPE/SwiGLU/linear cross-entropy (CUDA only)."
    )
    varlen_attention: Literal["auto", "on", "off"] = Field(
        "auto", description="Flash attention over packed records, one per position run (CUDA)."
    )
    fused_optimizer: bool = Field(True, description="torch's fused AdamW kernel on CUDA.")
    activation_checkpointing: Literal["auto", "off", "full", "selective"] = Field(
        "auto", description="auto: training.gradient_checkpointing; selective: every other layer."
    )
    compile_layers: bool = Field(
        False,
        description="torch.compile each decoder layer (ZeRO-0/1/2). Off until measured faster; "
        "the GPU benchmark measures it.",
    )


class CheckpointConfig(_Config):
    """Checkpointing and resume."""

    uri: str | None = Field(
        None, description="Checkpoint root URI (s3:// or file://); None disables."
    )
    storage: StorageConfig = Field(default_factory=StorageConfig, description="Store connection.")
    every_steps: int | None = Field(None, description="Save every N steps.")
    every_minutes: float | None = Field(None, description="Save at least every N minutes.")
    keep_last: int = Field(3, description="Committed checkpoints kept.")
    resume: str = Field("auto", description="auto | never | a checkpoint URI.")
    local_dir: str = Field("/tmp/kubetune/checkpoints", description="Local staging dir for shards.")
    save_final: bool = Field(
        True, description="Save a checkpoint of the last step (false: only periodic and SIGTERM)."
    )


class RegisterConfig(_Config):
    """A model registry the exported model is registered in (a new version per job)."""

    name: str = Field(description="Registered model name in tracking.mlflow's registry.")


class PushConfig(_Config):
    """A Hugging Face Hub repository the exported model is pushed to."""

    repo: str = Field(description="Repository id, org/name.")
    endpoint: str | None = Field(None, description="Hub URL; None: the public Hugging Face Hub.")
    private: bool = Field(True, description="Create the repository private if it does not exist.")
    revision: str = Field("main", description="Branch to commit to.")


class OutputConfig(_Config):
    """The final model."""

    uri: str = Field(description="Output URI (s3:// or file://).")
    format: Literal["merged", "adapter", "both"] = Field("merged", description="What to export.")
    storage: StorageConfig = Field(default_factory=StorageConfig, description="Store connection.")
    select: Literal["last", "best"] = Field(
        "last",
        description="last: the final weights; best: the committed checkpoint with the lowest "
        "eval loss (select best saves one at every evaluation that improves on it).",
    )
    registry: RegisterConfig | None = Field(None, description="MLflow model registry entry.")
    push: PushConfig | None = Field(None, description="Hugging Face Hub repository.")


class MlflowConfig(_Config):
    """An MLflow tracking server: one run per job, continued by every attempt."""

    tracking_uri: str = Field(description="Tracking server URI (http:// or https://).")
    experiment: str = Field(description="Experiment name (created if missing).")
    run_name: str = Field(description="Run name shown in the UI.")


class WandbConfig(_Config):
    """Weights & Biases, through its own client (wandb must be installed in the image)."""

    project: str = Field(description="W&B project.")
    entity: str | None = Field(None, description="W&B entity (user or team).")
    run_name: str = Field(description="Run name.")
    base_url: str | None = Field(None, description="Self-hosted W&B server URL.")


class TrackingConfig(_Config):
    """Where rank 0 logs params, per-step metrics and artifacts."""

    mlflow: MlflowConfig | None = Field(None, description="MLflow tracking server.")
    tensorboard_uri: str | None = Field(
        None, description="Folder for TensorBoard event files (beside the checkpoints)."
    )
    tensorboard_storage: StorageConfig = Field(
        default_factory=StorageConfig, description="Store connection of tensorboard_uri."
    )
    wandb: WandbConfig | None = Field(None, description="Weights & Biases.")


class BenchmarkConfig(_Config):
    """A fixed benchmark set, scored on the starting weights and on the exported ones."""

    uri: str = Field(description="Benchmark data URI (.jsonl/.parquet file or folder).")
    exact_match: bool = Field(False, description="Also score greedy exact match per record.")


class ReportingConfig(_Config):
    """Where progress and metrics go."""

    progress_sink: Literal["kubernetes", "file", "none"] = Field(
        "file",
        description="kubernetes: rank 0 patches the job's status.progress; file: JSON lines.",
    )
    progress_file: str | None = Field(None, description="JSON-lines progress file (file sink).")
    progress_interval_seconds: float = Field(
        10.0, description="Least seconds between status patches."
    )
    metrics_port: int | None = Field(
        None,
        description="Prometheus port of rank 0; rank r listens on port + local rank. None disables.",
    )
    console: bool = Field(False, description="Draw a progress bar on stderr (local runs).")


class JobRef(_Config):
    """The FineTuneJob this run belongs to."""

    name: str = Field(description="FineTuneJob name.")
    namespace: str = Field("default", description="Namespace.")
    uid: str | None = Field(None, description="FineTuneJob UID.")
    attempt: int = Field(1, description="Attempt number, from 1.")


class TrainerConfig(_Config):
    """Everything one trainer process needs, resolved by the operator."""

    job: JobRef = Field(description="The owning job.")
    model: ModelConfig = Field(description="Base model.")
    data: DataConfig = Field(description="Data.")
    method: MethodConfig = Field(description="Method.")
    training: TrainingConfig = Field(default_factory=TrainingConfig, description="Optimisation.")
    deepspeed: DeepSpeedConfig = Field(default_factory=DeepSpeedConfig, description="DeepSpeed.")
    perf: PerfConfig = Field(default_factory=PerfConfig, description="Throughput levers.")
    checkpoint: CheckpointConfig = Field(
        default_factory=CheckpointConfig, description="Checkpoints."
    )
    output: OutputConfig | None = Field(None, description="Final model; None skips the export.")
    reporting: ReportingConfig = Field(
        default_factory=ReportingConfig, description="Progress/metrics."
    )
    tracking: TrackingConfig = Field(
        default_factory=TrackingConfig, description="Experiment tracking."
    )
    benchmark: BenchmarkConfig | None = Field(
        None, description="Benchmark scored before and after training (data's store)."
    )
    spec: dict[str, Any] = Field(
        default_factory=dict,
        description="The FineTuneJob spec as applied, for the run card: literal env values and "
        "credential-looking keys redacted (kubetune_trainer.redact), as this lands in a "
        "ConfigMap and in the output.",
    )

    def to_json(self) -> str:
        """Stable JSON for the ConfigMap / config file."""
        return self.model_dump_json(indent=2)

    @classmethod
    def load(cls, path: str | Path) -> TrainerConfig:
        """Read a config file written by the operator or the local runner."""
        return cls.model_validate(json.loads(Path(path).read_text()))
