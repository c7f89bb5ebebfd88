"""Cross-field rules of the FineTuneJob spec, each written once.

A rule holds its CEL (for the apiserver: api/crd.py puts it into the CRD at the rule's scope)
and its offline twin (for `kubetune validate` and the operator's parse: the spec model checks
RULES in order and the first broken one is the error), with one message that names the field.
The same table of invalid manifests runs through both validators (tests/unit/api_cases.py), so
the two halves of a rule cannot drift.

Rules that compare the new spec with the old one (immutability) exist only as CEL: offline
validation has no old object.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import BaseModel

    from kubetune_operator.api.spec import FineTuneJobSpec


@dataclass(frozen=True)
class Rule:
    """One cross-field rule: CEL for the apiserver, a Python check for offline validation."""

    scope: str
    """The schema node the CEL rule sits on ("spec", "spec.training", ...): CEL's `self`."""
    cel: str
    """True when the rule holds."""
    message: str
    """The error both validators give; it names the offending field from spec on."""
    field: str | None
    """The offending field relative to scope (CEL fieldPath, e.g. ".maxSteps")."""
    broken: Callable[[FineTuneJobSpec], bool] | None
    """Offline twin of `cel`, on the whole spec: True when the rule is broken."""

    def crd_entry(self) -> dict[str, str]:
        """The rule as one x-kubernetes-validations entry (keys in alphabetical order)."""
        out = {"fieldPath": self.field} if self.field else {}
        return {**out, "message": self.message, "rule": self.cel}


def _needs_gpu(lever: str, attr: str) -> Rule:
    """A GPU-only throughput lever set to on needs gpusPerNode >= 1."""
    return Rule(
        "spec",
        f"!has(self.training) || !has(self.training.performance) || "
        f"!has(self.training.performance.{lever}) || "
        f"self.training.performance.{lever} != 'on' || self.resources.gpusPerNode > 0",
        f"spec.training.performance.{lever} on needs GPUs: set spec.resources.gpusPerNode >= 1 "
        "or leave it auto",
        f".training.performance.{lever}",
        lambda s: s.resources.gpus_per_node == 0 and getattr(s.training.performance, attr) == "on",
    )


# CEL twin of FineTuneJobSpec.processes_per_node.
_PROCESSES = (
    "(has(self.resources.processesPerNode) ? self.resources.processesPerNode : "
    "(self.resources.gpusPerNode > 0 ? self.resources.gpusPerNode : 1))"
)
_ADAPTERS = ("lora", "qlora")

RULES: tuple[Rule, ...] = (
    Rule(
        "spec.dataset",
        "!(has(self.validation) && has(self.validationSplit))",
        "spec.dataset: set either validation or validationSplit, not both",
        ".validationSplit",
        lambda s: s.dataset.validation is not None and s.dataset.validation_split is not None,
    ),
    Rule(
        "spec.method",
        "!(self.type in ['lora', 'qlora']) || has(self.lora)",
        "spec.method.lora is required when spec.method.type is lora or qlora",
        ".lora",
        lambda s: s.method.type in _ADAPTERS and s.method.lora is None,
    ),
    Rule(
        "spec.method",
        "self.type in ['lora', 'qlora'] || !has(self.lora)",
        "spec.method.lora is only allowed when spec.method.type is lora or qlora",
        ".lora",
        lambda s: s.method.type not in _ADAPTERS and s.method.lora is not None,
    ),
    Rule(
        "spec.method",
        "self.type != 'partial' || has(self.partial)",
        "spec.method.partial is required when spec.method.type is partial",
        ".partial",
        lambda s: s.method.type == "partial" and s.method.partial is None,
    ),
    Rule(
        "spec.method",
        "self.type == 'partial' || !has(self.partial)",
        "spec.method.partial is only allowed when spec.method.type is partial",
        ".partial",
        lambda s: s.method.type != "partial" and s.method.partial is not None,
    ),
    Rule(
        "spec.method.partial",
        "has(self.trainableModules) != has(self.topLayers)",
        "spec.method.partial: set exactly one of trainableModules and topLayers",
        None,
        lambda s: (
            s.method.partial is not None
            and (s.method.partial.trainable_modules is None)
            == (s.method.partial.top_layers is None)
        ),
    ),
    Rule(
        "spec.training",
        "!(has(self.epochs) && has(self.maxSteps))",
        "spec.training: set either epochs or maxSteps, not both",
        ".maxSteps",
        lambda s: s.training.epochs is not None and s.training.max_steps is not None,
    ),
    Rule(
        "spec.training",
        "!has(self.globalBatchSize) || self.globalBatchSize >= self.microBatchSize",
        "spec.training.globalBatchSize must be at least microBatchSize",
        ".globalBatchSize",
        lambda s: (
            s.training.global_batch_size is not None
            and s.training.global_batch_size < s.training.micro_batch_size
        ),
    ),
    # Gradient accumulation (the operator's plan divides by this) must come out whole.
    Rule(
        "spec",
        "!has(self.training) || !has(self.training.globalBatchSize) || "
        f"self.training.globalBatchSize % (self.training.microBatchSize * "
        f"self.resources.nodes * {_PROCESSES}) == 0",
        "spec.training.globalBatchSize must be a multiple of spec.training.microBatchSize "
        "x spec.resources.nodes x processes per node",
        ".training.globalBatchSize",
        lambda s: (
            s.training.global_batch_size is not None
            and s.training.global_batch_size % (s.training.micro_batch_size * s.world_size) != 0
        ),
    ),
    Rule(
        "spec.deepspeed",
        "!has(self.offload) || self.offload.parameters == 'none' || self.zeroStage == 3",
        "spec.deepspeed.offload.parameters needs spec.deepspeed.zeroStage 3",
        ".offload.parameters",
        lambda s: (
            s.deepspeed.offload is not None
            and s.deepspeed.offload.parameters != "none"
            and s.deepspeed.zero_stage != 3
        ),
    ),
    Rule(
        "spec.deepspeed",
        "!has(self.offload) || self.offload.optimizer == 'none' || self.zeroStage >= 1",
        "spec.deepspeed.offload.optimizer needs spec.deepspeed.zeroStage 1, 2 or 3",
        ".offload.optimizer",
        lambda s: (
            s.deepspeed.offload is not None
            and s.deepspeed.offload.optimizer != "none"
            and s.deepspeed.zero_stage < 1
        ),
    ),
    Rule(
        "spec.deepspeed",
        "!has(self.offload) || (self.offload.optimizer != 'nvme' && "
        "self.offload.parameters != 'nvme') || has(self.offload.nvmePath)",
        "spec.deepspeed.offload.nvmePath is required for nvme offload",
        ".offload.nvmePath",
        lambda s: (
            s.deepspeed.offload is not None
            and "nvme" in (s.deepspeed.offload.optimizer, s.deepspeed.offload.parameters)
            and not s.deepspeed.offload.nvme_path
        ),
    ),
    # Patience counts evaluations; without periodic ones there is only the final eval to compare.
    Rule(
        "spec.training",
        "!has(self.earlyStopping) || has(self.evalEverySteps)",
        "spec.training.earlyStopping needs periodic evaluations: set spec.training.evalEverySteps",
        ".earlyStopping",
        lambda s: s.training.early_stopping is not None and s.training.eval_every_steps is None,
    ),
    Rule(
        "spec.training",
        "!(has(self.gradientCheckpointing) && self.gradientCheckpointing && "
        "has(self.performance) && has(self.performance.activationCheckpointing) && "
        "self.performance.activationCheckpointing == 'off')",
        "spec.training.performance.activationCheckpointing off conflicts with "
        "spec.training.gradientCheckpointing true: set only one of them",
        ".performance.activationCheckpointing",
        lambda s: (
            s.training.gradient_checkpointing
            and s.training.performance.activation_checkpointing == "off"
        ),
    ),
    Rule(
        "spec",
        "self.method.type != 'qlora' || self.resources.gpusPerNode > 0",
        "spec.method.type qlora needs GPUs: set spec.resources.gpusPerNode >= 1",
        ".resources.gpusPerNode",
        lambda s: s.method.type == "qlora" and s.resources.gpus_per_node == 0,
    ),
    _needs_gpu("ligerKernels", "liger_kernels"),
    _needs_gpu("varlenAttention", "varlen_attention"),
    Rule(
        "spec",
        "has(self.output) || has(self.checkpoint)",
        "spec.output is required unless spec.checkpoint is set (the model then goes "
        "to <checkpoint.uri>/output)",
        ".output",
        lambda s: s.output is None and s.checkpoint is None,
    ),
    Rule(
        "spec",
        "!has(self.output) || !has(self.output.format) || self.output.format == 'merged' "
        "|| self.method.type in ['lora', 'qlora']",
        "spec.output.format adapter or both needs spec.method.type lora or qlora",
        ".output.format",
        lambda s: (
            s.output is not None
            and s.output.format in ("adapter", "both")
            and s.method.type not in _ADAPTERS
        ),
    ),
    Rule(
        "spec",
        "!(has(self.training) && has(self.training.earlyStopping)) || "
        "has(self.dataset.validation) || has(self.dataset.validationSplit)",
        "spec.training.earlyStopping needs validation data: set spec.dataset.validation "
        "or spec.dataset.validationSplit",
        ".training.earlyStopping",
        lambda s: (
            s.training.early_stopping is not None
            and s.dataset.validation is None
            and s.dataset.validation_split is None
        ),
    ),
)


def problems(spec: FineTuneJobSpec) -> list[str]:
    """The messages of every broken rule, in table order (empty when the spec is valid)."""
    return [r.message for r in RULES if r.broken is not None and r.broken(spec)]


# -- immutability: CEL transition rules, derived from the spec model ----------------------------------
MUTABLE = ("runPolicy.suspend",)
"""The only spec field that may change after creation."""


def _unchanged(path: str) -> str:
    """CEL: `path` (under self / oldSelf) was not added, removed or changed."""
    return f"has(self.{path}) == has(oldSelf.{path}) && (!has(self.{path}) || self.{path} == oldSelf.{path})"


def _aliases(model: type[BaseModel]) -> list[str]:
    """A model's field names as the manifest spells them, in declaration order."""
    return [f.alias or name for name, f in model.model_fields.items()]


def _nested(model: type[BaseModel], field: str) -> type[BaseModel]:
    """The model class a field of `model` holds."""
    for name, f in model.model_fields.items():
        if (f.alias or name) == field:
            annotation: Any = f.annotation
            return annotation
    raise KeyError(field)


def immutability_rules(spec_model: type[BaseModel]) -> list[Rule]:
    """One transition rule per spec field, and one for runPolicy that spares MUTABLE.

    Derived from the model, so a new spec field is immutable without being listed anywhere.
    """
    parents = {m.partition(".")[0] for m in MUTABLE}
    out = [
        Rule(
            "spec",
            _unchanged(field),
            f"spec.{field} is immutable once the job is created (only spec.runPolicy.suspend may "
            "change)",
            f".{field}",
            None,
        )
        for field in _aliases(spec_model)
        if field not in parents
    ]
    for parent in sorted(parents):
        kept = [f"{parent}.{f}" for f in _aliases(_nested(spec_model, parent))]
        parts = [f"({_unchanged(p)})" for p in kept if p not in MUTABLE]
        out.append(
            Rule(
                "spec",
                f"!has(self.{parent}) || !has(oldSelf.{parent}) || (" + " && ".join(parts) + ")",
                f"spec.{parent} is immutable once the job is created, except "
                + ", ".join(f"spec.{m}" for m in MUTABLE if m.startswith(parent + ".")),
                f".{parent}",
                None,
            )
        )
    return out
