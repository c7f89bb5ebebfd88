"""One table of FineTuneJob manifests for both validators: the apiserver (CRD schema + CEL,
tests/k8s/test_crd_validation.py) and the offline pydantic models / `kubetune validate`
(tests/unit/test_api_validation.py). Running the same table through both keeps them in step.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Manifest = dict[str, Any]


def valid_manifest(name: str = "valid-job") -> Manifest:
    """The smallest manifest both validators accept: LoRA on one GPU worker, output to S3."""
    return {
        "apiVersion": "kubetune.dev/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": name},
        "spec": {
            "model": {"source": "hf://org/tiny-model"},
            "dataset": {"train": "s3://data/train.jsonl"},
            "method": {"type": "lora", "lora": {"r": 8}},
            "output": {"uri": "s3://models/out"},
        },
    }


def _set(path: str, value: Any) -> Callable[[Manifest], None]:
    """Mutation: set a dotted path (creating objects on the way)."""

    def apply(m: Manifest) -> None:
        *parents, leaf = path.split(".")
        node = m
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value

    return apply


def _drop(path: str) -> Callable[[Manifest], None]:
    """Mutation: remove a dotted path."""

    def apply(m: Manifest) -> None:
        *parents, leaf = path.split(".")
        node = m
        for key in parents:
            node = node[key]
        del node[leaf]

    return apply


@dataclass(frozen=True)
class InvalidCase:
    """A manifest one edit away from valid, and the field both validators must name."""

    id: str
    edits: tuple[Callable[[Manifest], None], ...]
    field: str

    def manifest(self, name: str = "invalid-job") -> Manifest:
        """The valid manifest with this case's edits applied."""
        return edited(name, *self.edits)


def edited(name: str, *edits: Callable[[Manifest], None]) -> Manifest:
    """The valid manifest named `name` with `edits` applied."""
    m = copy.deepcopy(valid_manifest(name))
    for edit in edits:
        edit(m)
    return m


def case(id: str, field: str, *edits: Callable[[Manifest], None]) -> InvalidCase:
    """Shorthand for one table row."""
    return InvalidCase(id=id, edits=edits, field=field)


# Manifests one edit away from the valid one that both validators must also accept.
VALID_VARIANTS: dict[str, Manifest] = {
    # method.lora omitted: its documented defaults apply
    "lora-without-settings": edited("lora-defaults", _set("spec.method", {"type": "lora"})),
    "qlora-without-settings": edited("qlora-defaults", _set("spec.method", {"type": "qlora"})),
    "qlora-under-zero2": edited(
        "qlora-zero2", _set("spec.method.type", "qlora"), _set("spec.deepspeed.zeroStage", 2)
    ),
    "deepspeed-config-of-other-keys": edited(
        "ds-config-free-form",
        _set("spec.deepspeed.config", {"zero_optimization": {"overlap_comm": True}, "x": 1}),
    ),
    "one-process-per-gpu": edited(
        "ppn-equals-gpus",
        _set("spec.resources", {"gpusPerNode": 2, "processesPerNode": 2}),
    ),
    "processes-on-cpu-workers": edited(
        "ppn-on-cpu",
        _set("spec.resources", {"gpusPerNode": 0, "processesPerNode": 2}),
    ),
}

INVALID_CASES: list[InvalidCase] = [
    # wrong types
    case(
        "micro-batch-not-integer",
        "spec.training.microBatchSize",
        _set("spec.training.microBatchSize", "four"),
    ),
    case("nodes-as-string", "spec.resources.nodes", _set("spec.resources.nodes", "2")),
    case("packing-not-boolean", "spec.dataset.packing", _set("spec.dataset.packing", "yes")),
    case(
        "target-modules-not-list",
        "spec.method.lora.targetModules",
        _set("spec.method.lora.targetModules", "q_proj"),
    ),
    case(
        "learning-rate-not-number",
        "spec.training.learningRate",
        _set("spec.training.learningRate", "fast"),
    ),
    case(
        "fused-optimizer-not-boolean",
        "spec.training.performance.fusedOptimizer",
        _set("spec.training.performance.fusedOptimizer", "yes"),
    ),
    # `varlenAttention: off` unquoted: YAML 1.1 (kubectl, PyYAML) reads a boolean
    case(
        "varlen-attention-unquoted-off",
        "spec.training.performance.varlenAttention",
        _set("spec.training.performance.varlenAttention", False),
    ),
    case("model-not-object", "spec.model", _set("spec.model", "hf://org/tiny-model")),
    # out of range
    case("zero-stage-4", "spec.deepspeed.zeroStage", _set("spec.deepspeed.zeroStage", 4)),
    case("lora-rank-0", "spec.method.lora.r", _set("spec.method.lora.r", 0)),
    case("lora-dropout-above-1", "spec.method.lora.dropout", _set("spec.method.lora.dropout", 1.5)),
    case("learning-rate-0", "spec.training.learningRate", _set("spec.training.learningRate", 0)),
    case(
        "validation-split-1",
        "spec.dataset.validationSplit",
        _set("spec.dataset.validationSplit", 1.0),
    ),
    case("gpus-per-node-17", "spec.resources.gpusPerNode", _set("spec.resources.gpusPerNode", 17)),
    case("nodes-0", "spec.resources.nodes", _set("spec.resources.nodes", 0)),
    case("max-seq-length-8", "spec.dataset.maxSeqLength", _set("spec.dataset.maxSeqLength", 8)),
    case(
        "keep-last-0",
        "spec.checkpoint.keepLast",
        _set("spec.checkpoint", {"uri": "s3://ckpt/p", "keepLast": 0}),
    ),
    # unknown enum values
    case("method-prefix-tuning", "spec.method.type", _set("spec.method.type", "prefix-tuning")),
    case("dataset-format-csv", "spec.dataset.format", _set("spec.dataset.format", "csv")),
    case(
        "offload-to-gpu",
        "spec.deepspeed.offload.optimizer",
        _set("spec.deepspeed.offload", {"optimizer": "gpu"}),
    ),
    case("precision-int8", "spec.training.precision", _set("spec.training.precision", "int8")),
    case(
        "liger-kernels-unknown",
        "spec.training.performance.ligerKernels",
        _set("spec.training.performance.ligerKernels", "fast"),
    ),
    case(
        "activation-checkpointing-unknown",
        "spec.training.performance.activationCheckpointing",
        _set("spec.training.performance.activationCheckpointing", "partial"),
    ),
    case(
        "scheduler-unknown",
        "spec.training.scheduler",
        _set("spec.training.scheduler", "exponential"),
    ),
    # patterns
    case(
        "model-source-http", "spec.model.source", _set("spec.model.source", "http://example.com/m")
    ),
    case(
        "stall-timeout-words",
        "spec.runPolicy.stallTimeout",
        _set("spec.runPolicy.stallTimeout", "30 minutes"),
    ),
    case(
        "resume-latest",
        "spec.checkpoint.resume",
        _set("spec.checkpoint", {"uri": "s3://ckpt/p", "resume": "latest"}),
    ),
    case("name-with-dot", "metadata.name", _set("metadata.name", "my.job")),
    case("name-too-long", "metadata.name", _set("metadata.name", "j" * 46)),
    # missing required fields
    case("missing-model", "spec.model", _drop("spec.model")),
    case("missing-dataset-train", "spec.dataset.train", _drop("spec.dataset.train")),
    case("missing-method-type", "spec.method.type", _drop("spec.method.type")),
    case("missing-output-and-checkpoint", "spec.output", _drop("spec.output")),
    case("missing-spec", "spec", _drop("spec")),
    # unknown field
    case("unknown-training-field", "batchSize", _set("spec.training.batchSize", 8)),
    case(
        "unknown-env-field",
        "valueFromFile",
        _set("spec.resources.env", [{"name": "A", "valueFromFile": "/x"}]),
    ),
    # cross-field rules
    case(
        "global-batch-not-divisible",
        "spec.training.globalBatchSize",
        _set("spec.resources", {"nodes": 2, "gpusPerNode": 2}),
        _set("spec.training", {"microBatchSize": 3, "globalBatchSize": 18}),
    ),
    case(
        "global-batch-below-micro",
        "spec.training.globalBatchSize",
        _set("spec.training", {"microBatchSize": 8, "globalBatchSize": 4}),
    ),
    case(
        "qlora-without-gpu",
        "spec.resources.gpusPerNode",
        _set("spec.method.type", "qlora"),
        _set("spec.resources.gpusPerNode", 0),
    ),
    case(
        "qlora-under-zero3",
        "spec.deepspeed.zeroStage",
        _set("spec.method.type", "qlora"),
        _set("spec.deepspeed.zeroStage", 3),
    ),
    case(
        "qlora-with-parameter-offload",
        "spec.deepspeed.zeroStage",
        _set("spec.method.type", "qlora"),
        _set("spec.deepspeed", {"zeroStage": 3, "offload": {"parameters": "cpu"}}),
    ),
    case(
        "more-processes-than-gpus",
        "spec.resources.processesPerNode",
        _set("spec.resources", {"gpusPerNode": 2, "processesPerNode": 4}),
    ),
    case(
        "fp16-on-cpu-workers",
        "spec.training.precision",
        _set("spec.resources.gpusPerNode", 0),
        _set("spec.training.precision", "fp16"),
    ),
    case(
        "deepspeed-config-micro-batch",
        "spec.deepspeed.config.train_micro_batch_size_per_gpu",
        _set("spec.deepspeed.config", {"train_micro_batch_size_per_gpu": 3}),
    ),
    case(
        "deepspeed-config-zero-stage",
        "spec.deepspeed.config.zero_optimization.stage",
        _set("spec.deepspeed.config", {"zero_optimization": {"stage": 3, "overlap_comm": True}}),
    ),
    case(
        "deepspeed-config-global-batch",
        "spec.deepspeed.config.train_batch_size",
        _set("spec.deepspeed.config", {"train_batch_size": 64}),
    ),
    case(
        "deepspeed-config-accumulation",
        "spec.deepspeed.config.gradient_accumulation_steps",
        _set("spec.deepspeed.config", {"gradient_accumulation_steps": 8}),
    ),
    case(
        "stall-timeout-zero",
        "spec.runPolicy.stallTimeout",
        _set("spec.runPolicy.stallTimeout", "0m"),
    ),
    case(
        "lora-settings-on-full",
        "spec.method.lora",
        _set("spec.method.type", "full"),
        _set("spec.output.format", "merged"),
    ),
    case(
        "partial-without-settings", "spec.method.partial", _set("spec.method", {"type": "partial"})
    ),
    case(
        "partial-settings-on-lora",
        "spec.method.partial",
        _set("spec.method.partial", {"topLayers": 2}),
    ),
    case(
        "partial-with-both-selectors",
        "spec.method.partial",
        _set(
            "spec.method",
            {"type": "partial", "partial": {"trainableModules": ["lm_head"], "topLayers": 2}},
        ),
    ),
    case(
        "validation-and-split",
        "validationSplit",
        _set("spec.dataset.validation", "s3://data/val.jsonl"),
        _set("spec.dataset.validationSplit", 0.1),
    ),
    case("epochs-and-max-steps", "maxSteps", _set("spec.training", {"epochs": 1, "maxSteps": 10})),
    case(
        "parameter-offload-without-zero3",
        "spec.deepspeed.offload.parameters",
        _set("spec.deepspeed", {"zeroStage": 2, "offload": {"parameters": "cpu"}}),
    ),
    case(
        "optimizer-offload-with-zero0",
        "spec.deepspeed.offload.optimizer",
        _set("spec.deepspeed", {"zeroStage": 0, "offload": {"optimizer": "cpu"}}),
    ),
    case(
        "nvme-offload-without-path",
        "spec.deepspeed.offload.nvmePath",
        _set("spec.deepspeed", {"zeroStage": 3, "offload": {"parameters": "nvme"}}),
    ),
    case(
        "adapter-output-for-full",
        "spec.output.format",
        _set("spec.method", {"type": "full"}),
        _set("spec.output.format", "adapter"),
    ),
    case(
        "gradient-checkpointing-with-activation-checkpointing-off",
        "spec.training.performance.activationCheckpointing",
        _set("spec.training.gradientCheckpointing", True),
        _set("spec.training.performance.activationCheckpointing", "off"),
    ),
    case(
        "liger-kernels-on-without-gpu",
        "spec.training.performance.ligerKernels",
        _set("spec.resources.gpusPerNode", 0),
        _set("spec.training.performance.ligerKernels", "on"),
    ),
    case(
        "varlen-attention-on-without-gpu",
        "spec.training.performance.varlenAttention",
        _set("spec.resources.gpusPerNode", 0),
        _set("spec.training.performance.varlenAttention", "on"),
    ),
    # preference tuning
    case("dpo-settings-without-dpo", "spec.method.dpo", _set("spec.method.dpo", {"beta": 0.2})),
    case(
        "preference-records-without-dpo",
        "spec.dataset.format",
        _set("spec.dataset.format", "preference"),
    ),
    case(
        "dpo-on-chat-records",
        "spec.dataset.format",
        _set("spec.method.objective", "dpo"),
        _set("spec.dataset.format", "chat"),
    ),
    case(
        "label-smoothing-with-ipo",
        "spec.method.dpo.labelSmoothing",
        _set("spec.method.objective", "dpo"),
        _set("spec.method.dpo", {"loss": "ipo", "labelSmoothing": 0.1}),
    ),
    case(
        "simpo-gamma-with-sigmoid",
        "spec.method.dpo.simpoGamma",
        _set("spec.method.objective", "dpo"),
        _set("spec.method.dpo", {"simpoGamma": 1.0}),
    ),
    case(
        "label-smoothing-one-half",
        "spec.method.dpo.labelSmoothing",
        _set("spec.method.objective", "dpo"),
        _set("spec.method.dpo", {"labelSmoothing": 0.5}),
    ),
    case(
        "beta-zero",
        "spec.method.dpo.beta",
        _set("spec.method.objective", "dpo"),
        _set("spec.method.dpo", {"beta": 0}),
    ),
    case(
        "negative-sft-weight",
        "spec.method.dpo.sftWeight",
        _set("spec.method.objective", "dpo"),
        _set("spec.method.dpo", {"sftWeight": -1}),
    ),
    case(
        "unknown-dpo-loss",
        "spec.method.dpo.loss",
        _set("spec.method.objective", "dpo"),
        _set("spec.method.dpo", {"loss": "kto"}),
    ),
    case(
        "early-stopping-without-validation",
        "spec.training.earlyStopping",
        _set("spec.training.earlyStopping", {"patience": 2}),
    ),
    case(
        "early-stopping-with-evals-but-without-validation",
        "spec.training.earlyStopping",
        _set("spec.training.evalEverySteps", 10),
        _set("spec.training.earlyStopping", {"patience": 2}),
    ),
    case(
        "early-stopping-without-eval-every-steps",
        "spec.training.earlyStopping",
        _set("spec.dataset.validationSplit", 0.1),
        _set("spec.training.earlyStopping", {"patience": 2}),
    ),
    case("gang-unknown-scheduler", "spec.resources.gang.scheduler",
         _set("spec.resources.gang", {"scheduler": "yunikorn"})),
    case("gang-volcano-queue-for-coscheduling", "spec.resources.gang.volcanoQueue",
         _set("spec.resources.gang", {"scheduler": "coscheduling", "volcanoQueue": "q"})),
    case("gang-timeout-for-volcano", "spec.resources.gang.scheduleTimeoutSeconds",
         _set("spec.resources.gang", {"scheduler": "volcano", "scheduleTimeoutSeconds": 60})),
    case("queue-without-name", "spec.queue.name", _set("spec.queue", {"name": ""})),
    # results: best-model export, registries, tracking
    case(
        "select-best-without-eval-every-steps",
        "spec.training.evalEverySteps",
        _set("spec.dataset.validationSplit", 0.1),
        _set("spec.checkpoint", {"uri": "s3://ckpt/p"}),
        _set("spec.output.select", "best"),
    ),
    case(
        "select-best-without-validation",
        "spec.dataset.validationSplit",
        _set("spec.training.evalEverySteps", 10),
        _set("spec.checkpoint", {"uri": "s3://ckpt/p"}),
        _set("spec.output.select", "best"),
    ),
    case(
        "select-best-without-checkpoint",
        "spec.output.select best needs spec.checkpoint",
        _set("spec.training.evalEverySteps", 10),
        _set("spec.dataset.validationSplit", 0.1),
        _set("spec.output.select", "best"),
    ),
    case("select-unknown", "spec.output.select", _set("spec.output.select", "first")),
    case(
        "register-without-mlflow",
        "spec.tracking.mlflow",
        _set("spec.output.register", {"name": "my-model"}),
    ),
    case("push-repo-without-org", "spec.output.push.repo", _set("spec.output.push", {"repo": "x"})),
    case(
        "mlflow-uri-not-http",
        "spec.tracking.mlflow.trackingUri",
        _set("spec.tracking.mlflow", {"trackingUri": "databricks"}),
    ),
    case(
        "tensorboard-without-checkpoint",
        "spec.tracking.tensorboard",
        _set("spec.tracking.tensorboard", True),
    ),
]  # fmt: skip


def preference_manifest(dpo: dict[str, Any] | None, fmt: str = "preference") -> Manifest:
    """The valid manifest turned into preference tuning with these dpo settings."""
    m = valid_manifest("valid-dpo")
    m["spec"]["method"]["objective"] = "dpo"
    if dpo is not None:
        m["spec"]["method"]["dpo"] = dpo
    m["spec"]["dataset"]["format"] = fmt
    return m


# Preference tuning settings both validators accept (defaults, each loss with what it takes).
VALID_PREFERENCE: list[Manifest] = [
    preference_manifest(None, fmt="auto"),
    preference_manifest({"beta": 0.05, "loss": "sigmoid", "labelSmoothing": 0.1}),
    preference_manifest({"loss": "robust", "labelSmoothing": 0.2}),
    preference_manifest({"loss": "ipo", "beta": 0.5}),
    preference_manifest({"loss": "hinge", "sftWeight": 0.2}),
    preference_manifest({"loss": "simpo", "beta": 2.5, "simpoGamma": 1.0, "labelSmoothing": 0.1}),
]

# Spec edits on an existing job that the apiserver must refuse (transition rules: no offline twin).
IMMUTABLE_EDITS: list[tuple[str, str, Any]] = [
    ("spec.training.learningRate", "spec.training", 0.001),
    ("spec.resources.nodes", "spec.resources", 2),
    ("spec.method.lora.r", "spec.method", 32),
    ("spec.model.source", "spec.model", "hf://org/other-model"),
    ("spec.runPolicy.backoffLimit", "spec.runPolicy", 9),
    ("spec.checkpoint", "spec.checkpoint", {"uri": "s3://ckpt/p"}),
    ("spec.training.performance.ligerKernels", "spec.training", "off"),
    ("spec.tracking.mlflow", "spec.tracking", {"trackingUri": "http://mlflow:5000"}),
]

# Spelled the way people write hyper-parameters; kubectl reads 2e-4 as a number, so must we.
EXPONENT_YAML = """\
apiVersion: kubetune.dev/v1alpha1
kind: FineTuneJob
metadata: {name: exponent}
spec:
  model: {source: hf://org/tiny-model}
  dataset: {train: s3://data/train.jsonl}
  method: {type: lora, lora: {r: 8}}
  training: {learningRate: 2e-4, weightDecay: 1E-2}
  output: {uri: s3://models/out}
"""
