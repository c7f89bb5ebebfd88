"""FineTuneJob spec models.

These pydantic models are the single source of the API: the CRD schema (descriptions, defaults,
enums, ranges) is generated from them (`make crds`), and `kubetune validate` checks a manifest
with them offline. Rules that relate several fields live in api/guards.py, each written once
as CEL (put into the CRD by api/crd.py) and as its offline twin (checked by FineTuneJobSpec).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonDict

from kubetune_operator.api import guards, k8s_types
from kubetune_operator.api.constants import MAX_JOB_NAME_LENGTH, QUEUE_NAME_LABEL
from kubetune_operator.decode import depth_of
from kubetune_trainer.redact import looks_secret

# --- names and URIs: one pattern each, used by the CRD (pattern) and offline alike ----------
# A DNS subdomain (RFC 1123): Secrets, ServiceAccounts, PriorityClasses, schedulers, claims.
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# A label value (the queue name becomes kueue.x-k8s.io/queue-name) that is also a name.
QUEUE_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
OBJECT_NAME: dict[str, Any] = {"min_length": 1, "max_length": 253, "pattern": DNS_SUBDOMAIN}
# A path segment that is not empty, "." or ".." and holds no control character: no URI or path
# may climb out of its root.
_SEGMENT = r"(?:[^/\s\x00-\x1f\x7f]*[^./\s\x00-\x1f\x7f][^/\s\x00-\x1f\x7f]*|\.{3,})"
_PATH = rf"(?:/{_SEGMENT})*/?"
_S3 = rf"s3://[a-z0-9][a-z0-9.-]{{1,61}}[a-z0-9]{_PATH}"  # bucket: 3-63 of a-z 0-9 . -
_PVC = rf"pvc://[a-z0-9]([-a-z0-9.]*[a-z0-9])?{_PATH}"  # claim: a DNS subdomain
# file:///abs/path; file://rel/path only means something to `kubetune run` (the operator
# refuses it: plan.cluster_problems)
_FILE = rf"file:///?{_SEGMENT}(?:/{_SEGMENT})*/?"
_HF = rf"hf://[A-Za-z0-9][-A-Za-z0-9_.]*/[A-Za-z0-9][-A-Za-z0-9_.]*(@[^/\s]+)?{_PATH}"
_FTJ = r"ftj://[a-z]([-a-z0-9]{0,43}[a-z0-9])?"  # a job name of this namespace
URI_PATTERN = rf"^(?:{_S3}|{_PVC}|{_FILE}|{_HF}|{_FTJ})$"
STORAGE_URI_PATTERN = rf"^(?:{_S3}|{_PVC}|{_FILE})$"
DATA_URI_PATTERN = rf"^(?:{_S3}|{_PVC}|{_FILE}|{_HF})$"
# checkpoint.resume names one checkpoint folder (<root>/step-NNNNNNNN) or a policy.
RESUME_PATTERN = (
    rf"^(?:auto|never|(?:s3://[a-z0-9][a-z0-9.-]{{1,61}}[a-z0-9]|pvc://[a-z0-9]([-a-z0-9.]*[a-z0-9])?"
    rf"|file:///?{_SEGMENT})(?:/{_SEGMENT})*/step-[0-9]{{8}}/?)$"
)
ENDPOINT_PATTERN = r"^https?://[^\s/?#]+(/[^\s?#]*)?$"
REGION_PATTERN = r"^[A-Za-z0-9_.-]+$"
IMAGE_PATTERN = r"^[^\s]+$"
ABSOLUTE_PATH_PATTERN = rf"^(?:/{_SEGMENT})+/?$"
# A DNS label: worker pod hostnames and Service names are built from the job name.
JOB_NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(s|m|h))+$"
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$"
HUB_REPO_PATTERN = r"^[A-Za-z0-9][-A-Za-z0-9_.]*/[A-Za-z0-9][-A-Za-z0-9_.]*$"
HTTP_URI_PATTERN = r"^https?://[^\s]+$"


PRESERVE: JsonDict = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


def _derived_keys_schema() -> JsonDict:
    """The raw DeepSpeed config keys kubetune derives from the spec (guards.DEEPSPEED_DERIVED),
    declared in the schema only so that CEL can see them; spec.deepspeed.config stays free-form
    and guards.py refuses them."""
    derived: JsonDict = {
        "x-kubernetes-int-or-string": True,
        "description": "Set by the spec (refused here).",
    }
    top: JsonDict = {}
    nested: dict[str, JsonDict] = {}
    for key in guards.DEEPSPEED_DERIVED:
        parent, _, leaf = key.rpartition(".")
        (nested.setdefault(parent, {}) if parent else top)[leaf] = derived
    for parent, props in nested.items():
        top[parent] = {**PRESERVE, "description": "Merged over kubetune's.", "properties": props}
    return top


# Deepest nesting of a free-form object (a DeepSpeed config nests 3 or 4 levels); deeper ones
# are refused before anything copies or serializes them (kubetune_operator.decode).
MAX_FREE_FORM_DEPTH = 16


def credential_keys(value: Any, prefix: str = "") -> list[str]:
    """Dotted paths of the keys in `value` whose name looks like a credential's."""
    found: list[str] = []
    stack: list[tuple[Any, str]] = [(value, prefix)]
    while stack:
        node, path = stack.pop()
        items = (
            node.items()
            if isinstance(node, dict)
            else enumerate(node)
            if isinstance(node, list)
            else ()
        )
        for key, child in items:
            here = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and looks_secret(key):
                found.append(here)
            stack.append((child, here))
    return sorted(found)


def k8s_type(kind: str) -> JsonDict:
    """The structural schema of an embedded Kubernetes type, for json_schema_extra (the
    field's own description stays)."""
    return {k: v for k, v in k8s_types.schemas()[kind].items() if k != "description"}


def typed(kind: str, each: bool = False) -> Any:
    """A validator checking a value (each item of a list, with `each`) against an embedded
    Kubernetes type's schema, as the apiserver does."""

    def check(value: Any) -> Any:
        if value is None:
            return value
        schema = k8s_types.schemas()[kind]
        items = enumerate(value) if each else [(None, value)]
        for index, item in items:
            where = f"[{index}]" if index is not None else ""
            found = k8s_types.problems(item, schema, where)
            if found:
                raise ValueError("; ".join(p.lstrip(".") for p in found[:3]))
        return value

    return check


def shallow(value: Any) -> Any:
    """A free-form value nested at most MAX_FREE_FORM_DEPTH levels, or a ValueError."""
    if value is not None and depth_of(value) > MAX_FREE_FORM_DEPTH:
        raise ValueError(f"nested deeper than {MAX_FREE_FORM_DEPTH} levels")
    return value


INT_OR_STRING: JsonDict = {"x-kubernetes-int-or-string": True}
# A non-negative Kubernetes quantity: 16, "500m", "1.5Gi", "2e3".
AMOUNT_PATTERN = (
    r"^\+?([0-9]+(\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][-+]?[0-9]+)?$"
)
_AMOUNT = re.compile(AMOUNT_PATTERN)
AMOUNT: JsonDict = {
    "x-kubernetes-int-or-string": True,
    "pattern": AMOUNT_PATTERN,
    "maxLength": 64,
    "minimum": 0,
}


ObjectName = Annotated[str, StringConstraints(**OBJECT_NAME)]
ModuleName = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=IMAGE_PATTERN)]


class ApiModel(BaseModel):
    """Base of every API object: camelCase on the wire, unknown fields refused, and strict
    types (no "2" for an integer, no "yes" for a boolean) because the apiserver is strict too."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        strict=True,
        allow_inf_nan=False,  # JSON has neither; YAML's .inf and .nan are refused here too
    )

    @model_validator(mode="before")
    @classmethod
    def _drop_nulls(cls, data: Any) -> Any:
        """The apiserver prunes null fields before defaulting and validation; so do we."""
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None}
        return data


class ModelSpec(ApiModel):
    """The base model to fine-tune."""

    source: str = Field(
        description="Where the base model (weights, config and tokenizer) comes from: "
        "hf://org/name (Hugging Face Hub), s3://bucket/prefix, pvc://claim/path, "
        "file:///path, or ftj://other-job to continue from the output of another "
        "FineTuneJob in this namespace once it has succeeded. A LoRA adapter output (by "
        "ftj:// or its URI) is trained further with method lora or qlora, and merged into its "
        "base with full or partial.",
        pattern=URI_PATTERN,
        max_length=1024,
    )
    revision: str | None = Field(
        None,
        description="Hub revision (branch, tag or commit) for hf:// sources.",
        min_length=1,
        max_length=256,
        pattern=IMAGE_PATTERN,
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto",
        description="Data type the weights are read in, before training casts them to "
        "training.precision: auto reads them as stored; float32 fits any precision; bfloat16 "
        "and float16 only their own (bf16, fp16), anything else is refused.",
    )
    credentials_secret: str | None = Field(
        None,
        description="Secret with credentials for this source only: key HF_TOKEN for hf://, "
        "keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and optional AWS_SESSION_TOKEN) for "
        "s3:// and ftj://. Passed to pods as env, never copied.",
        **OBJECT_NAME,
    )
    endpoint: str | None = Field(
        None,
        description="Endpoint URL of the source's store: an S3-compatible store (MinIO, Ceph, "
        "...) for s3:// and ftj://, a private hub or mirror for hf:// (default: the public "
        "Hub); never taken from checkpoint.endpoint. The platform policy may restrict it.",
        max_length=1024,
        pattern=ENDPOINT_PATTERN,
    )
    region: str | None = Field(
        None, description="S3 region of the source's store.", max_length=64, pattern=REGION_PATTERN
    )
    trust_remote_code: bool = Field(
        False, description="Allow model code shipped with the model repository to run."
    )


class DatasetSpec(ApiModel):
    """Training (and validation) data."""

    train: str = Field(
        description="Training data: a .jsonl or .parquet file or a folder of them "
        "(file://, pvc://, s3://, hf://).",
        pattern=DATA_URI_PATTERN,
        max_length=1024,
    )
    validation: str | None = Field(
        None,
        description="Validation data, same formats as train.",
        pattern=DATA_URI_PATTERN,
        max_length=1024,
    )
    validation_split: float | None = Field(
        None,
        description="Fraction of the training records held out for validation when no "
        "validation set is given (deterministic with training.seed).",
        gt=0,
        lt=1,
    )
    format: Literal["auto", "prompt-completion", "chat", "text", "preference"] = Field(
        "auto",
        description="Record format: prompt-completion ({prompt, completion}; loss on the "
        "completion only), chat ({messages}; the tokenizer's chat template, loss on assistant "
        "turns only), text ({text}), preference ({prompt, chosen, rejected}, as text or as chat "
        "messages; for spec.method.objective dpo), or auto to detect it from the first record.",
    )
    max_seq_length: int = Field(
        2048,
        description="Tokens per training sequence. With packing, records are concatenated "
        "and cut into sequences of exactly this length, so a longer record continues in the "
        "next sequence; without packing, each record is one sequence and longer ones are "
        "truncated.",
        ge=16,
        le=1048576,
    )
    packing: bool = Field(
        True,
        description="Pack several short records into each sequence to waste no compute on padding "
        "(preference pairs: every sequence of a micro-batch in one row, kept apart by position; "
        "off: padded to the longest of the micro-batch).",
    )
    credentials_secret: str | None = Field(
        None,
        description="Secret with credentials for the data only: AWS_ACCESS_KEY_ID and "
        "AWS_SECRET_ACCESS_KEY (and optional AWS_SESSION_TOKEN) for s3://, HF_TOKEN for hf://.",
        **OBJECT_NAME,
    )
    endpoint: str | None = Field(
        None,
        description="Endpoint URL of the data's store: S3-compatible for s3://, a private hub "
        "or mirror for hf://; never taken from checkpoint.endpoint. The platform policy may "
        "restrict it.",
        max_length=1024,
        pattern=ENDPOINT_PATTERN,
    )
    region: str | None = Field(
        None, description="S3 region of the data's store.", max_length=64, pattern=REGION_PATTERN
    )


class LoraSpec(ApiModel):
    """Low-rank adapter settings for method.type lora and qlora."""

    r: int = Field(16, description="Adapter rank.", ge=1, le=1024)
    alpha: int = Field(
        32, description="Adapter scaling numerator (scale = alpha / r).", ge=1, le=4096
    )
    dropout: float = Field(0.05, description="Dropout on the adapter input.", ge=0, le=1)
    target_modules: list[ModuleName] = Field(
        default_factory=lambda: ["all-linear"],
        description="Module names (or name suffixes) that get adapters; 'all-linear' means "
        "every linear layer except the output head.",
        min_length=1,
        max_length=64,
    )
    use_dora: bool = Field(False, description="Weight-decomposed LoRA (DoRA).")


class PartialSpec(ApiModel):
    """Which parts train when method.type is partial; everything else is frozen."""

    trainable_modules: list[ModuleName] | None = Field(
        None,
        description="Parameter name substrings that train (e.g. lm_head, norm).",
        min_length=1,
        max_length=256,
    )
    top_layers: int | None = Field(
        None,
        description="Train only the last N transformer layers and the output head (lm_head; "
        "in models that tie it to the input embeddings, those train with it).",
        ge=1,
        le=1024,
    )


class DpoSpec(ApiModel):
    """Preference tuning: how chosen and rejected responses pull the model."""

    beta: float = Field(
        0.1,
        description="How far the model may move from the reference: higher keeps it closer "
        "(ipo: the regularisation tau; simpo: the reward scale, typically 2 to 10).",
        gt=0,
        le=100,
    )
    loss: Literal["sigmoid", "ipo", "hinge", "robust", "simpo"] = Field(
        "sigmoid",
        description="sigmoid: DPO; ipo: IPO (squared, on per-token log-ratios); hinge: SLiC; "
        "robust: rDPO (labels flipped with probability labelSmoothing); simpo: SimPO, "
        "reference-free, on the mean log-probability of each response.",
    )
    # No default of 0: the apiserver compares an integral default with a fractional exclusive
    # maximum as integers (0 < 0 fails), so unset means 0.
    label_smoothing: float | None = Field(
        None,
        description="Share of preference labels assumed wrong: conservative DPO for sigmoid and "
        "simpo, the flip rate of robust; 0 when unset.",
        ge=0,
        lt=0.5,
    )
    simpo_gamma: float | None = Field(
        None,
        description="simpo only: the target reward margin gamma (loss -log sigmoid(beta x mean "
        "log-prob margin - gamma)); 0.5 when unset.",
        ge=0,
        le=100,
    )
    sft_weight: float = Field(
        0.0,
        description="Adds this weight x the next-token loss on the chosen answers (RPO; with "
        "simpo, CPO's NLL term), which keeps the chosen answers likely while the margin grows.",
        ge=0,
        le=100,
    )


class MethodSpec(ApiModel):
    """How the model is adapted."""

    type: Literal["full", "partial", "lora", "qlora"] = Field(
        description="full: every weight trains; partial: only the listed modules or top layers; "
        "lora: low-rank adapters on a frozen base; qlora: adapters on a 4-bit base (GPU only)."
    )
    lora: LoraSpec | None = Field(
        None,
        description="Adapter settings (lora and qlora); when omitted, every default below "
        "applies (r 16, alpha 32, dropout 0.05, all-linear).",
    )
    partial: PartialSpec | None = Field(None, description="Trainable parts (partial).")
    objective: Literal["sft", "dpo"] = Field(
        "sft",
        description="sft: supervised fine-tuning, the next-token loss on the responses; dpo: "
        "preference tuning on {prompt, chosen, rejected} pairs (dataset format preference), "
        "with any type. The reference is the base with the adapter off (lora, qlora) or "
        "log-probabilities computed before the first step and kept with the checkpoints (full, "
        "partial, an adapter continued from an earlier job); status.progress.preference names "
        "it.",
    )
    dpo: DpoSpec | None = Field(
        None, description="Preference tuning settings (objective dpo; defaults when unset)."
    )


class EarlyStoppingSpec(ApiModel):
    """Stop when the eval loss stops improving, to guard against overfitting."""

    patience: int = Field(
        3, description="Evaluations without improvement before stopping.", ge=1, le=1000
    )
    min_delta: float = Field(
        0.0, description="Smallest decrease of eval loss that counts.", ge=0, le=1000
    )


class PerformanceSpec(ApiModel):
    """Throughput levers of the trainer. auto (the default) is what measured fastest, and each
    lever switches itself off where it cannot run; set one only to override that choice."""

    liger_kernels: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Liger's fused RMSNorm, RoPE, SwiGLU and linear cross-entropy kernels (GPU "
        "only; the fused loss never builds the logits tensor). auto: where a GPU and the library "
        "are present and the model type is supported; on: the attempt fails without a GPU or the "
        "library; off: never.",
    )
    varlen_attention: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Flash attention over packed sequences, each record attending only to "
        "itself (GPU only). auto: where the kernel passes a self-check; on: required, the "
        "attempt fails where it cannot run; off: the packed-sequence mask with sdpa.",
    )
    fused_optimizer: bool = Field(
        True, description="torch's fused AdamW kernel on GPUs (no effect on CPU)."
    )
    activation_checkpointing: Literal["auto", "off", "full", "selective"] = Field(
        "auto",
        description="Recompute activations in backward to save memory. full: every layer; "
        "selective: every other layer (half the recompute, half the saving); off: none; auto: "
        "full when training.gradientCheckpointing is true, else off.",
    )

    @field_validator("liger_kernels", "varlen_attention", "activation_checkpointing", mode="before")
    @classmethod
    def _unquoted_on_off(cls, value: Any) -> Any:
        """YAML 1.1 reads unquoted on/off as booleans; say so instead of a bare enum error."""
        if isinstance(value, bool):
            word = "on" if value else "off"
            raise ValueError(f'got the boolean {str(value).lower()}: write "{word}" in quotes')
        return value


class TrainingSpec(ApiModel):
    """Optimisation hyper-parameters."""

    epochs: float | None = Field(
        None,
        description="Passes over the training data (default 1 when maxSteps is unset).",
        gt=0,
        le=1000,
    )
    max_steps: int | None = Field(
        None,
        description="Optimizer steps to run, instead of epochs (set one of the two).",
        ge=1,
        le=1_000_000_000,
    )
    learning_rate: float = Field(2e-4, description="Peak learning rate.", gt=0, le=1)
    scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = Field(
        "cosine", description="Learning-rate schedule after warmup."
    )
    warmup_ratio: float = Field(0.03, description="Fraction of steps spent warming up.", ge=0, lt=1)
    weight_decay: float = Field(0.0, description="AdamW weight decay.", ge=0, le=1)
    max_grad_norm: float = Field(
        1.0, description="Gradient clipping norm (0 disables).", ge=0, le=1_000_000
    )
    micro_batch_size: int = Field(
        1, description="Sequences per process per forward pass.", ge=1, le=4096
    )
    global_batch_size: int | None = Field(
        None,
        description="Sequences per optimizer step across all processes; must be a multiple of "
        "microBatchSize x processes. Gradient accumulation is derived from it. "
        "Default: microBatchSize x processes.",
        ge=1,
        le=1_048_576,
    )
    gradient_checkpointing: bool = Field(
        False,
        description="Recompute activations in backward to save memory (the same as "
        "performance.activationCheckpointing full).",
    )
    seed: int = Field(
        42,
        description="Seed for data order, splits and initialisation (NumPy takes 32 bits).",
        ge=0,
        le=4_294_967_295,
    )
    eval_every_steps: int | None = Field(
        None,
        description="Evaluate every N steps (always at the end when validation data exists).",
        ge=1,
        le=1_000_000_000,
    )
    early_stopping: EarlyStoppingSpec | None = Field(
        None,
        description="Stop early when the eval loss stops improving over evaluations made "
        "every evalEverySteps (required with it); the output then holds the weights of the "
        "best evaluation (status.output.step).",
    )
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description="Training precision; auto picks bf16 on GPUs that have it, else fp32."
    )
    performance: PerformanceSpec = Field(
        default_factory=PerformanceSpec,
        description="Throughput levers (fused kernels, attention, optimizer, activation "
        "checkpointing); each defaults to what measured fastest. Quote on and off in YAML "
        '("on"), which otherwise reads them as booleans.',
    )


class OffloadSpec(ApiModel):
    """ZeRO offload targets."""

    optimizer: Literal["none", "cpu", "nvme"] = Field(
        "none", description="Where optimizer states live."
    )
    parameters: Literal["none", "cpu", "nvme"] = Field(
        "none", description="Where parameters live (ZeRO stage 3 only)."
    )
    nvme_path: str | None = Field(
        None,
        description="Local NVMe path for nvme offload (absolute).",
        max_length=1024,
        pattern=ABSOLUTE_PATH_PATTERN,
    )


class DeepSpeedSpec(ApiModel):
    """DeepSpeed ZeRO settings."""

    zero_stage: int = Field(
        2,
        description="ZeRO stage: 0 data parallel, 1 shards optimizer states, 2 also gradients, "
        "3 also parameters.",
        ge=0,
        le=3,
    )
    offload: OffloadSpec | None = Field(None, description="Offload optimizer states or parameters.")
    config: dict[str, Any] | None = Field(
        None,
        description="Raw DeepSpeed config merged last over what kubetune derives (expert use): "
        "at most 64 top-level keys, nested at most 16 levels (deeper is refused before the "
        "job starts; the apiserver cannot check depth in a free-form object), no "
        "credential-looking keys (it travels in a ConfigMap), and none of the keys kubetune "
        "derives from the spec (train_batch_size, train_micro_batch_size_per_gpu, "
        "gradient_accumulation_steps, zero_optimization.stage: set spec.training and "
        "spec.deepspeed.zeroStage instead).",
        max_length=64,
        json_schema_extra={**PRESERVE, "properties": _derived_keys_schema()},
    )

    _shallow_config = field_validator("config")(shallow)

    @field_validator("config")
    @classmethod
    def _no_credentials(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        """The config travels in a ConfigMap: a credential there would be readable by anyone
        who can read ConfigMaps. DeepSpeed's monitors read their keys from the env too."""
        for path in credential_keys(value or {}):
            raise ValueError(
                f"key {path} looks like a credential: a ConfigMap is no place for it; pass it "
                "by env from a Secret (spec.resources.env valueFrom.secretKeyRef)"
            )
        return value


class EnvVarSpec(ApiModel):
    """An environment variable for the trainer containers (a core/v1 EnvVar)."""

    name: str = Field(
        description="Variable name: printable ASCII other than '=' (core/v1).",
        min_length=1,
        max_length=256,
        pattern=r"^[ -<>-~]+$",
    )
    value: str | None = Field(None, description="Literal value.", max_length=32768)
    value_from: dict[str, Any] | None = Field(
        None,
        description="Source of the value (secretKeyRef, configMapKeyRef, fieldRef, ...): a "
        "core/v1 EnvVarSource.",
        json_schema_extra=k8s_type("EnvVarSource"),
    )

    _typed_value_from = field_validator("value_from")(typed("EnvVarSource"))


class GangSpec(ApiModel):
    """All-or-nothing scheduling of the workers by a gang scheduler: kubetune creates a
    PodGroup (minMember = the workers) owned by the job, and the scheduler binds every worker
    or none, so a gang never holds part of its GPUs while it waits for the rest."""

    scheduler: Literal["coscheduling", "volcano"] = Field(
        description="coscheduling: the scheduler-plugins Coscheduling plugin (PodGroup "
        "scheduling.x-k8s.io/v1alpha1); volcano: Volcano (PodGroup scheduling.volcano.sh/v1beta1). "
        "The workers go to that scheduler's name unless resources.schedulerName says otherwise."
    )
    schedule_timeout_seconds: int | None = Field(
        None,
        description="coscheduling only: seconds the plugin keeps trying to place the whole gang "
        "before it backs off and tries again (the PodGroup's scheduleTimeoutSeconds).",
        ge=1,
        le=31_536_000,
    )
    volcano_queue: str | None = Field(
        None,
        description="volcano only: the Volcano queue of the PodGroup (Volcano's default: default).",
        **OBJECT_NAME,
    )


class ResourcesSpec(ApiModel):
    """Where and how big the worker gang is."""

    nodes: int = Field(1, description="Worker pods (one per node).", ge=1, le=1024)
    gpus_per_node: int = Field(
        1, description="nvidia.com/gpu per worker pod; 0 runs on CPU.", ge=0, le=16
    )
    processes_per_node: int | None = Field(
        None,
        description="Trainer processes per pod (default: gpusPerNode, or 1 without GPUs).",
        ge=1,
        le=64,
    )
    image: str | None = Field(
        None,
        description="Trainer image (default: the one the operator is configured with).",
        min_length=1,
        max_length=512,
        pattern=IMAGE_PATTERN,
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        None, description="Image pull policy of the trainer containers."
    )
    image_pull_secrets: list[ObjectName] | None = Field(
        None,
        description="Names of Secrets used to pull the image.",
        max_length=16,
    )
    requests: dict[str, int | str] | None = Field(
        None,
        description="Resource requests per worker pod (cpu, memory, ...): non-negative "
        "quantities; GPUs come from gpusPerNode.",
        max_length=32,
        json_schema_extra={"additionalProperties": AMOUNT},
    )
    limits: dict[str, int | str] | None = Field(
        None,
        description="Resource limits per worker pod, none below its request.",
        max_length=32,
        json_schema_extra={"additionalProperties": AMOUNT},
    )
    node_selector: (
        dict[str, Annotated[str, StringConstraints(max_length=63, pattern=LABEL_VALUE)]] | None
    ) = Field(
        None,
        description="Node labels the workers must match (label keys and values).",
        max_length=64,
    )
    tolerations: list[dict[str, Any]] | None = Field(
        None,
        description="Tolerations of the worker pods (core/v1 Toleration).",
        max_length=64,
        json_schema_extra={"items": k8s_type("Toleration")},
    )
    affinity: dict[str, Any] | None = Field(
        None,
        description="Affinity of the worker pods (core/v1 Affinity).",
        json_schema_extra=k8s_type("Affinity"),
    )
    priority_class_name: str | None = Field(
        None, description="PriorityClass of the workers.", **OBJECT_NAME
    )
    scheduler_name: str | None = Field(
        None,
        description="Scheduler for the workers. With gang set, the default is the gang "
        "scheduler's name as the operator is configured (scheduler-plugins-scheduler, volcano).",
        **OBJECT_NAME,
    )
    gang: GangSpec | None = Field(
        None,
        description="Gang-schedule the workers: all of them are bound together or none is.",
    )
    service_account_name: str | None = Field(
        None,
        description="ServiceAccount the workers run as (default: a per-job one that may only "
        "update this job's progress).",
        **OBJECT_NAME,
    )
    env: list[EnvVarSpec] | None = Field(
        None, description="Extra environment variables of the trainer containers.", max_length=128
    )
    shared_memory: str | None = Field(
        None,
        description="Size of the /dev/shm volume (memory-backed), e.g. 16Gi. Default: 1Gi per process.",
        pattern=QUANTITY_PATTERN,
        max_length=32,
    )

    _typed_tolerations = field_validator("tolerations")(typed("Toleration", each=True))
    _typed_affinity = field_validator("affinity")(typed("Affinity"))

    @field_validator("requests", "limits")
    @classmethod
    def _amounts(cls, value: dict[str, int | str] | None) -> dict[str, int | str] | None:
        """Non-negative quantities (the CRD's pattern) under resource names (checked here
        only: CEL cannot afford map keys of unbounded length)."""
        for key, amount in (value or {}).items():
            ok = isinstance(amount, int) and amount >= 0
            ok = ok or (
                isinstance(amount, str) and len(amount) <= 64 and bool(_AMOUNT.match(amount))
            )
            if not ok:
                raise ValueError(f"{key}: {amount!r} is not a non-negative quantity (500m, 16Gi)")
        bad = guards.bad_resource_names(value or {})
        if bad:
            raise ValueError(f"{', '.join(bad)}: not a resource name")
        return value

    @field_validator("node_selector")
    @classmethod
    def _label_keys(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        """Label keys (checked here only: CEL cannot afford map keys of unbounded length)."""
        bad = [k for k in value or {} if not guards.qualified(k)]
        if bad:
            raise ValueError(f"{', '.join(bad)}: not a label key")
        return value

    @field_validator("node_selector", "requests", "limits", mode="before")
    @classmethod
    def _drop_null_entries(cls, value: Any) -> Any:
        """Null map entries are pruned by the apiserver too."""
        if isinstance(value, dict):
            return {k: v for k, v in value.items() if v is not None}
        return value


class CheckpointSpec(ApiModel):
    """Where and how often training state is saved, and what is resumed."""

    uri: str = Field(
        description="Checkpoint location: s3://bucket/prefix, pvc://claim/path or file:///path.",
        pattern=STORAGE_URI_PATTERN,
        max_length=1024,
    )
    endpoint: str | None = Field(
        None,
        description="S3 endpoint URL for S3-compatible stores (MinIO, Ceph, ...).",
        max_length=1024,
        pattern=ENDPOINT_PATTERN,
    )
    region: str | None = Field(
        None, description="S3 region.", max_length=64, pattern=REGION_PATTERN
    )
    credentials_secret: str | None = Field(
        None,
        description="Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and optional "
        "AWS_SESSION_TOKEN) for the checkpoint store only.",
        **OBJECT_NAME,
    )
    every_steps: int | None = Field(
        None, description="Save every N optimizer steps.", ge=1, le=1_000_000_000
    )
    every_minutes: float | None = Field(
        None,
        description="Save at least every N minutes (whichever of the two comes first).",
        gt=0,
        le=10080,
    )
    keep_last: int = Field(
        3, description="Committed checkpoints kept; older ones are deleted.", ge=1, le=1000
    )
    resume: str = Field(
        "auto",
        description="auto: resume from this job's newest committed checkpoint; never: always "
        "start fresh; or the URI of one checkpoint folder (<checkpoint.uri of a job of this "
        "namespace>/step-NNNNNNNN) to start from.",
        pattern=RESUME_PATTERN,
        max_length=1024,
    )


class RegisterSpec(ApiModel):
    """A model registry entry for the exported model."""

    name: str = Field(
        description="Registered model name in the model registry of spec.tracking.mlflow's "
        "server; each job adds a new version, linked to its run.",
        min_length=1,
        max_length=256,
    )


class PushSpec(ApiModel):
    """A Hugging Face Hub repository the exported model is pushed to, with the run card as its
    model card."""

    repo: str = Field(
        description="Repository id, org/name (created if missing).",
        pattern=HUB_REPO_PATTERN,
        max_length=200,
    )
    endpoint: str | None = Field(
        None,
        description="URL of the hub (a private one); default: the public Hugging Face Hub.",
        pattern=HTTP_URI_PATTERN,
        max_length=1024,
    )
    private: bool = Field(True, description="Create the repository private if it is missing.")
    revision: str = Field("main", description="Branch to commit to.", min_length=1, max_length=256)
    credentials_secret: str | None = Field(
        None,
        description="Secret whose HF_TOKEN (a token with write access) pushes; read for nothing "
        "else.",
        max_length=253,
    )


class OutputSpec(ApiModel):
    """Where the final model goes."""

    uri: str = Field(
        description="Output location: s3://bucket/prefix, pvc://claim/path or file:///path.",
        pattern=STORAGE_URI_PATTERN,
        max_length=1024,
    )
    format: Literal["merged", "adapter", "both"] | None = Field(
        None,
        description="merged: full weights (adapters merged in); adapter: the LoRA adapter only; "
        "both. Default: adapter for lora/qlora, merged otherwise.",
    )
    endpoint: str | None = Field(
        None,
        description="S3 endpoint URL (default: checkpoint.endpoint).",
        max_length=1024,
        pattern=ENDPOINT_PATTERN,
    )
    region: str | None = Field(
        None,
        description="S3 region (default: checkpoint.region).",
        max_length=64,
        pattern=REGION_PATTERN,
    )
    credentials_secret: str | None = Field(
        None,
        description="Secret for the output store (default: checkpoint.credentialsSecret).",
        **OBJECT_NAME,
    )
    select: Literal["last", "best"] = Field(
        "last",
        description="Which weights are exported: last, the final ones; best, those of the "
        "evaluation with the lowest eval loss after step 0 (a checkpoint is saved at every "
        "evaluation that improves on the best, and kept from pruning). best needs "
        "training.evalEverySteps, validation data and spec.checkpoint.",
    )
    register_model: RegisterSpec | None = Field(
        None,
        alias="register",  # `register` itself would shadow a method of pydantic's models
        description="Register the exported model in spec.tracking.mlflow's model registry.",
    )
    push: PushSpec | None = Field(
        None, description="Push the exported model to a Hugging Face Hub repository."
    )


class MlflowSpec(ApiModel):
    """An MLflow tracking server. One run per job: params (the resolved spec), metrics per
    step, the run card and loss curve as artifacts; a restarted attempt continues the run."""

    tracking_uri: str = Field(
        description="Tracking server URI, e.g. http://mlflow.mlflow.svc:5000.",
        pattern=HTTP_URI_PATTERN,
        max_length=1024,
    )
    experiment: str | None = Field(
        None,
        description="Experiment name, created if missing (default: the job's namespace).",
        min_length=1,
        max_length=256,
    )
    run_name: str | None = Field(
        None, description="Run name (default: the job name).", min_length=1, max_length=256
    )
    credentials_secret: str | None = Field(
        None,
        description="Secret with MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and "
        "MLFLOW_TRACKING_PASSWORD (each optional), passed to the workers under those names.",
        max_length=253,
    )


class WandbSpec(ApiModel):
    """Weights & Biases, logged through its own client (the trainer image must include wandb)."""

    project: str = Field(description="W&B project.", min_length=1, max_length=256)
    entity: str | None = Field(None, description="W&B entity (user or team).", max_length=256)
    run_name: str | None = Field(
        None, description="Run name (default: the job name).", min_length=1, max_length=256
    )
    base_url: str | None = Field(
        None,
        description="URL of a self-hosted W&B server (WANDB_BASE_URL).",
        pattern=HTTP_URI_PATTERN,
        max_length=1024,
    )
    credentials_secret: str | None = Field(
        None, description="Secret with WANDB_API_KEY.", max_length=253
    )


class TrackingSpec(ApiModel):
    """Experiment tracking; only rank 0 of the trainer logs."""

    mlflow: MlflowSpec | None = Field(None, description="Log to an MLflow tracking server.")
    tensorboard: bool = Field(
        False,
        description="Write TensorBoard event files to <checkpoint.uri>/tensorboard (needs "
        "spec.checkpoint).",
    )
    wandb: WandbSpec | None = Field(
        None, description="Log to Weights & Biases (not exercised by kubetune's tests)."
    )


class RunPolicySpec(ApiModel):
    """Restarts, deadlines, suspension and clean-up."""

    backoff_limit: int = Field(
        3,
        description="Failed attempts retried before the job is Failed. Attempts ended by a "
        "preemption or an eviction count toward preemptionLimit instead.",
        ge=0,
        le=1000,
    )
    preemption_limit: int | None = Field(
        None,
        description="Attempts ended by a preemption or an eviction (the workers were stopped "
        "from outside, e.g. by Kueue or the scheduler) that are resumed before the job is "
        "Failed. Unset: no limit.",
        ge=0,
        le=1000,
    )
    active_deadline_seconds: int | None = Field(
        None,
        description="Seconds the job may be active before it is Failed, counted from its first "
        "start or, like a Kubernetes Job, from its latest resume or Kueue readmission (time "
        "suspended or queued and earlier active spans do not count).",
        ge=1,
        le=31_536_000,
    )
    ttl_seconds_after_finished: int | None = Field(
        None,
        description="Delete the job this long after it Succeeded or Failed.",
        ge=0,
        le=31_536_000,
    )
    suspend: bool = Field(
        False,
        description="true: checkpoint and delete the workers (phase Suspended); false again: "
        "resume from that checkpoint. Without spec.checkpoint the checkpoint goes to the "
        "operator's default checkpoint store if it has one; if not, nothing is saved and a "
        "resumed job starts again from step 0 (status and a Warning event say so). The only "
        "spec field that may change after creation.",
    )
    clean_pod_policy: Literal["All", "Running", "None"] = Field(
        "All",
        description="Worker pods deleted when the job finishes: All, only the still Running "
        "ones, or None (kept for debugging).",
    )
    stall_timeout: str = Field(
        "30m",
        description="An attempt whose progress has not advanced for this long (after its first "
        "step) is ended with reason Stalled and retried. Go-style duration, e.g. 30m, 1h.",
        pattern=DURATION_PATTERN,
        max_length=32,
    )
    startup_error_timeout: str = Field(
        "5m",
        description="A worker that cannot start its container this long after it was scheduled "
        "(image pull error, a missing Secret or key, a bad container config) is reported: "
        "condition StartupError, a Warning event and status.lastFailure. Go-style duration.",
        pattern=DURATION_PATTERN,
        max_length=32,
    )
    fail_on_startup_error: bool = Field(
        False,
        description="true: after startupErrorTimeout also end the attempt as failed (retried "
        "within backoffLimit); false: keep waiting for the problem to be fixed.",
    )


class BenchmarkSpec(ApiModel):
    """A fixed benchmark set, scored on the weights the job starts from and the ones it exports:
    how a FineTuneSchedule's quality gate compares a run's model with the one it continues."""

    uri: str = Field(
        description="Benchmark records (.jsonl/.parquet file or folder, in the data's format), "
        "read with spec.dataset's credentials, endpoint and region.",
        pattern=DATA_URI_PATTERN,
        max_length=1024,
    )
    exact_match: bool = Field(
        False,
        description="Also score exact match: the share of records whose whole completion "
        "(assistant turns for chat) the model predicts greedily.",
    )


class QueueSpec(ApiModel):
    """Kueue admission."""

    name: str = Field(
        description="Kueue LocalQueue in the job's namespace. The operator creates a Kueue "
        "Workload for the job and starts no worker before Kueue admits it. The label "
        "kueue.x-k8s.io/queue-name on the job does the same.",
        min_length=1,
        max_length=63,
        pattern=QUEUE_NAME_PATTERN,
    )


class FineTuneJobSpec(ApiModel):
    """What to fine-tune, on what, how, and where the results go."""

    model: ModelSpec = Field(description="The base model.")
    dataset: DatasetSpec = Field(description="Training and validation data.")
    method: MethodSpec = Field(description="Full, partial, LoRA or QLoRA fine-tuning.")
    training: TrainingSpec = Field(default_factory=TrainingSpec, description="Hyper-parameters.")
    deepspeed: DeepSpeedSpec = Field(
        default_factory=DeepSpeedSpec, description="DeepSpeed ZeRO settings."
    )
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec, description="The worker gang.")
    checkpoint: CheckpointSpec | None = Field(
        None,
        description="Checkpoints and resume. Without it a failed attempt restarts from step 0 "
        "(a suspend or preemption saves to the operator's default checkpoint store, if any).",
    )
    output: OutputSpec | None = Field(None, description="Where the fine-tuned model is written.")
    run_policy: RunPolicySpec = Field(
        default_factory=RunPolicySpec, description="Restarts, deadlines, suspend."
    )
    queue: QueueSpec | None = Field(None, description="Kueue queue the job is admitted through.")
    tracking: TrackingSpec | None = Field(
        None, description="Experiment tracking: MLflow, TensorBoard, Weights & Biases."
    )
    benchmark: BenchmarkSpec | None = Field(
        None,
        description="Score a fixed benchmark set before training and after it (status.benchmark).",
    )

    @model_validator(mode="after")
    def _cross_field(self) -> FineTuneJobSpec:
        """The rules over several fields (api/guards.py) checked offline, on the manifest as
        CEL sees it (camelCase, defaults filled in): the first broken one is the error."""
        as_json = self.model_dump(by_alias=True, exclude_none=True, mode="json")
        for problem in guards.problems(as_json):
            raise ValueError(problem)
        return self

    @property
    def processes_per_node(self) -> int:
        """Trainer processes in each worker pod."""
        r = self.resources
        if r.processes_per_node is not None:
            return r.processes_per_node
        return r.gpus_per_node if r.gpus_per_node > 0 else 1

    @property
    def world_size(self) -> int:
        """Trainer processes across the gang."""
        return self.resources.nodes * self.processes_per_node


class ObjectMeta(BaseModel):
    """The parts of metadata kubetune reads."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    name: str = Field(
        description="Job name.",
        min_length=1,
        max_length=MAX_JOB_NAME_LENGTH,
        pattern=JOB_NAME_PATTERN,
    )
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    labels: dict[str, str] | None = None


class FineTuneJob(BaseModel):
    """A whole FineTuneJob manifest (status is ignored when parsing; other root fields are
    refused, as the apiserver prunes them)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    api_version: Literal["kubetune.dev/v1alpha1"] = Field(
        "kubetune.dev/v1alpha1", alias="apiVersion"
    )
    kind: Literal["FineTuneJob"] = "FineTuneJob"
    metadata: ObjectMeta
    spec: FineTuneJobSpec

    @model_validator(mode="after")
    def _one_queue(self) -> FineTuneJob:
        """spec.queue.name and Kueue's queue-name label may both be set only if they agree."""
        label = (self.metadata.labels or {}).get(QUEUE_NAME_LABEL)
        spec = self.spec.queue.name if self.spec.queue else None
        if label is not None and spec is not None and label != spec:
            raise ValueError(
                f"spec.queue.name ({spec}) and the label {QUEUE_NAME_LABEL} ({label}) name "
                "different LocalQueues: set one of them, or both to the same queue"
            )
        return self

    @property
    def queue_name(self) -> str | None:
        """The Kueue LocalQueue the job is admitted through: spec.queue.name, else the
        kueue.x-k8s.io/queue-name label (Kueue's own convention for jobs), else None."""
        if self.spec.queue is not None:
            return self.spec.queue.name
        return (self.metadata.labels or {}).get(QUEUE_NAME_LABEL) or None
