"""Every rule over several fields of a FineTuneJob spec, each written once: a CEL rule for the
apiserver and a check of the same manifest JSON for `kubetune validate` and the operator.

Each Guard names the schema node its CEL rule is attached to (`at`, dotted, relative to spec;
`[]` steps into list items) and the field it blames; `check` reads the same node of the
manifest as CEL sees it (camelCase JSON, defaults filled in) and returns the same message CEL
gives (its messageExpression, where it has one), or None. crd.build_crd attaches every rule;
spec.FineTuneJobSpec runs every check in GUARDS order, the first broken one being the error;
tables of bad manifests run through both (tests/unit/api_cases.py, tests/bad_manifests.py).

Rules that compare the new spec with the old one (immutability) are CEL only, derived from the
spec model: offline validation has no old object.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from kubetune_trainer.redact import SECRET_NAME, looks_secret

Json = dict[str, Any]


@dataclass(frozen=True)
class Guard:
    """One rule: where it lives in the schema, its CEL, and its offline twin."""

    at: str
    cel: str
    summary: str
    message_cel: str | None
    field: str
    check: Callable[[Json], str | None] | None
    """None for a transition rule (it compares with oldSelf, which offline has not)."""

    def rule(self) -> dict[str, str]:
        """The x-kubernetes-validations entry, keys in order (the summary stands in should the
        message expression fail, and is what the API reference shows)."""
        out = {"rule": self.cel, "message": self.summary}
        if self.message_cel:
            out["messageExpression"] = self.message_cel
        if self.field:
            out["fieldPath"] = self.field
        return dict(sorted(out.items()))


def fixed(at: str, cel: str, message: str, field: str, broken: Callable[[Json], bool]) -> Guard:
    """A rule whose message does not depend on the value: `broken(node)` says it is broken."""
    return Guard(at, cel, message, None, field, lambda n: message if broken(n) else None)


def cel_list(names: tuple[str, ...]) -> str:
    """A CEL list literal of strings."""
    return "[" + ", ".join(f"'{n}'" for n in names) + "]"


def node(spec: Json, at: str) -> list[Json]:
    """The values at dotted path `at` of a spec (every item where a step ends in [])."""
    found: list[Any] = [spec]
    for step in at.split(".") if at else []:
        key, many = step.removesuffix("[]"), step.endswith("[]")
        found = [n.get(key) for n in found if isinstance(n, dict) and n.get(key) is not None]
        if many:
            found = [item for n in found if isinstance(n, list) for item in n]
    return [n for n in found if isinstance(n, dict)]


def rule(cel: str, message: str, field_path: str | None = None) -> dict[str, str]:
    """One CEL rule of a FineTuneSweep or FineTuneSchedule model (their rules sit on their own
    models, each with a pydantic validator as its offline twin); `field_path` points the error
    at the offending field."""
    out = {"rule": cel, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    return out


def cel_rules(*rules: dict[str, str]) -> dict[str, Any]:
    """json_schema_extra carrying CEL rules of a sweep or schedule model into its CRD."""
    return {"x-kubernetes-validations": list(rules)}


# --- how fields of the spec go together ----------------------------------------------------
_ADAPTERS = ("lora", "qlora")
# CEL twin of _processes (and of FineTuneJobSpec.processes_per_node).
_PROCESSES_CEL = (
    "(has(self.resources.processesPerNode) ? self.resources.processesPerNode : "
    "(self.resources.gpusPerNode > 0 ? self.resources.gpusPerNode : 1))"
)


def _processes(resources: Json) -> int:
    """Trainer processes per pod: processesPerNode, else gpusPerNode, else 1."""
    gpus = int(resources.get("gpusPerNode", 0))
    return int(resources.get("processesPerNode") or (gpus if gpus > 0 else 1))


def _not_divisible(spec: Json) -> bool:
    t, r = spec.get("training") or {}, spec["resources"]
    per_step = int(t.get("microBatchSize", 1)) * int(r.get("nodes", 1)) * _processes(r)
    return "globalBatchSize" in t and int(t["globalBatchSize"]) % per_step != 0


def _needs_gpu(lever: str) -> Guard:
    """A GPU-only throughput lever set to on needs gpusPerNode >= 1."""
    return fixed(
        "",
        f"!has(self.training) || !has(self.training.performance) || "
        f"!has(self.training.performance.{lever}) || "
        f"self.training.performance.{lever} != 'on' || self.resources.gpusPerNode > 0",
        f"spec.training.performance.{lever} on needs GPUs: set spec.resources.gpusPerNode >= 1 "
        "or leave it auto",
        f".training.performance.{lever}",
        lambda s: (
            ((s.get("training") or {}).get("performance") or {}).get(lever) == "on"
            and s["resources"].get("gpusPerNode") == 0
        ),
    )


# A Go-style duration whose every part is zero (0s, 0m0s, 0.0h).
_ZERO_DURATION = "^(0+([.]0+)?[smh])+$"


# Raw DeepSpeed config keys kubetune sets from the spec (key path -> the spec field that sets
# it): a value there would either repeat the spec or contradict it, so the spec field is the one
# place to say it.
DEEPSPEED_DERIVED = {
    "train_batch_size": "spec.training.globalBatchSize",
    "train_micro_batch_size_per_gpu": "spec.training.microBatchSize",
    "gradient_accumulation_steps": "spec.training.globalBatchSize",
    "zero_optimization.stage": "spec.deepspeed.zeroStage",
}


def _derived_by_spec(key: str, owner: str) -> Guard:
    """deepspeed.config may not set `key`, which kubetune derives from spec field `owner`."""
    parent, _, leaf = key.rpartition(".")
    at = "deepspeed.config" + (f".{parent}" if parent else "")
    return fixed(
        at,
        f"!has(self.{leaf})",
        f"spec.deepspeed.config.{key} is set by {owner}: set it there (a value here would "
        "contradict it)",
        f".{leaf}",
        lambda n: leaf in n,
    )


def _offload(d: Json) -> Json:
    return d.get("offload") or {}


_SMOOTHING_LOSSES = ("sigmoid", "robust", "simpo")
_PREFERENCE_FORMAT = (
    "spec.dataset.format preference goes with spec.method.objective dpo, and dpo with "
    "preference (or auto)"
)

# Preference tuning: its settings only with objective dpo, each setting only with the losses
# that read it, and preference records exactly for dpo (auto detects either).
PREFERENCE: list[Guard] = [
    fixed(
        "method",
        "!has(self.dpo) || (has(self.objective) && self.objective == 'dpo')",
        "spec.method.dpo is only allowed when spec.method.objective is dpo",
        ".dpo",
        lambda m: "dpo" in m and m.get("objective", "sft") != "dpo",
    ),
    fixed(
        "method.dpo",
        "!has(self.labelSmoothing) || self.labelSmoothing == 0.0 || !has(self.loss) || "
        f"self.loss in {cel_list(_SMOOTHING_LOSSES)}",
        "spec.method.dpo.labelSmoothing applies to loss sigmoid, robust or simpo only",
        ".labelSmoothing",
        lambda d: (
            bool(d.get("labelSmoothing")) and d.get("loss", "sigmoid") not in _SMOOTHING_LOSSES
        ),
    ),
    fixed(
        "method.dpo",
        "!has(self.simpoGamma) || (has(self.loss) && self.loss == 'simpo')",
        "spec.method.dpo.simpoGamma applies to loss simpo only",
        ".simpoGamma",
        lambda d: "simpoGamma" in d and d.get("loss", "sigmoid") != "simpo",
    ),
    fixed(
        "",
        "!has(self.dataset.format) || self.dataset.format == 'auto' || "
        "((self.dataset.format == 'preference') == "
        "(has(self.method.objective) && self.method.objective == 'dpo'))",
        _PREFERENCE_FORMAT,
        ".dataset.format",
        lambda s: (
            s["dataset"].get("format", "auto") != "auto"
            and (s["dataset"].get("format") == "preference")
            != (s["method"].get("objective", "sft") == "dpo")
        ),
    ),
]

# --- results: which checkpoint is exported, registries, tracking ------------------------------
# CEL: the job does not export the best weights (each select-best rule starts with it).
_SELECTS_BEST_CEL = "!has(self.output) || !has(self.output.select) || self.output.select != 'best'"


def _selects_best(spec: Json) -> bool:
    return (spec.get("output") or {}).get("select") == "best"


def _has_validation(spec: Json) -> bool:
    return "validation" in spec["dataset"] or "validationSplit" in spec["dataset"]


_RESULTS: list[Guard] = [
    fixed(
        "",
        f"{_SELECTS_BEST_CEL} || (has(self.training) && has(self.training.evalEverySteps))",
        "spec.output.select best needs periodic evaluations: set spec.training.evalEverySteps",
        ".output.select",
        lambda s: _selects_best(s) and "evalEverySteps" not in (s.get("training") or {}),
    ),
    fixed(
        "",
        f"{_SELECTS_BEST_CEL} || has(self.dataset.validation) || has(self.dataset.validationSplit)",
        "spec.output.select best needs validation data: set spec.dataset.validation or "
        "spec.dataset.validationSplit",
        ".output.select",
        lambda s: _selects_best(s) and not _has_validation(s),
    ),
    fixed(
        "",
        f"{_SELECTS_BEST_CEL} || has(self.checkpoint)",
        "spec.output.select best needs spec.checkpoint: the best weights are exported from the "
        "checkpoint saved at that evaluation",
        ".output.select",
        lambda s: _selects_best(s) and "checkpoint" not in s,
    ),
    fixed(
        "",
        "!has(self.output) || !has(self.output.register) || "
        "(has(self.tracking) && has(self.tracking.mlflow))",
        "spec.output.register needs spec.tracking.mlflow: the new model version is linked to the "
        "job's MLflow run",
        ".output.register",
        lambda s: (
            "register" in (s.get("output") or {}) and "mlflow" not in (s.get("tracking") or {})
        ),
    ),
    fixed(
        "",
        "!has(self.tracking) || !has(self.tracking.tensorboard) || "
        "!self.tracking.tensorboard || has(self.checkpoint)",
        "spec.tracking.tensorboard needs spec.checkpoint: event files are written beside the "
        "checkpoints",
        ".tracking.tensorboard",
        lambda s: (s.get("tracking") or {}).get("tensorboard") is True and "checkpoint" not in s,
    ),
]


CROSS_FIELD: list[Guard] = [
    fixed(
        "dataset",
        "!(has(self.validation) && has(self.validationSplit))",
        "spec.dataset: set either validation or validationSplit, not both",
        ".validationSplit",
        lambda d: "validation" in d and "validationSplit" in d,
    ),
    fixed(
        "method",
        "self.type in ['lora', 'qlora'] || !has(self.lora)",
        "spec.method.lora is only allowed when spec.method.type is lora or qlora",
        ".lora",
        lambda m: m["type"] not in _ADAPTERS and "lora" in m,
    ),
    fixed(
        "method",
        "self.type != 'partial' || has(self.partial)",
        "spec.method.partial is required when spec.method.type is partial",
        ".partial",
        lambda m: m["type"] == "partial" and "partial" not in m,
    ),
    fixed(
        "method",
        "self.type == 'partial' || !has(self.partial)",
        "spec.method.partial is only allowed when spec.method.type is partial",
        ".partial",
        lambda m: m["type"] != "partial" and "partial" in m,
    ),
    fixed(
        "method.partial",
        "has(self.trainableModules) != has(self.topLayers)",
        "spec.method.partial: set exactly one of trainableModules and topLayers",
        "",
        lambda p: ("trainableModules" in p) == ("topLayers" in p),
    ),
    *PREFERENCE,
    fixed(
        "training",
        "!(has(self.epochs) && has(self.maxSteps))",
        "spec.training: set either epochs or maxSteps, not both",
        ".maxSteps",
        lambda t: "epochs" in t and "maxSteps" in t,
    ),
    fixed(
        "training",
        "!has(self.globalBatchSize) || self.globalBatchSize >= self.microBatchSize",
        "spec.training.globalBatchSize must be at least microBatchSize",
        ".globalBatchSize",
        lambda t: "globalBatchSize" in t and t["globalBatchSize"] < t.get("microBatchSize", 1),
    ),
    # Gradient accumulation (the operator's plan divides by this) must come out whole.
    fixed(
        "",
        "!has(self.training) || !has(self.training.globalBatchSize) || "
        f"self.training.globalBatchSize % (self.training.microBatchSize * "
        f"self.resources.nodes * {_PROCESSES_CEL}) == 0",
        "spec.training.globalBatchSize must be a multiple of spec.training.microBatchSize "
        "x spec.resources.nodes x processes per node",
        ".training.globalBatchSize",
        _not_divisible,
    ),
    fixed(
        "resources.gang",
        "!has(self.scheduleTimeoutSeconds) || self.scheduler == 'coscheduling'",
        "spec.resources.gang.scheduleTimeoutSeconds is only used by scheduler coscheduling",
        ".scheduleTimeoutSeconds",
        lambda g: "scheduleTimeoutSeconds" in g and g["scheduler"] != "coscheduling",
    ),
    fixed(
        "resources.gang",
        "!has(self.volcanoQueue) || self.scheduler == 'volcano'",
        "spec.resources.gang.volcanoQueue is only used by scheduler volcano",
        ".volcanoQueue",
        lambda g: "volcanoQueue" in g and g["scheduler"] != "volcano",
    ),
    fixed(
        "deepspeed",
        "!has(self.offload) || self.offload.parameters == 'none' || self.zeroStage == 3",
        "spec.deepspeed.offload.parameters needs spec.deepspeed.zeroStage 3",
        ".offload.parameters",
        lambda d: _offload(d).get("parameters", "none") != "none" and d.get("zeroStage") != 3,
    ),
    fixed(
        "deepspeed",
        "!has(self.offload) || self.offload.optimizer == 'none' || self.zeroStage >= 1",
        "spec.deepspeed.offload.optimizer needs spec.deepspeed.zeroStage 1, 2 or 3",
        ".offload.optimizer",
        lambda d: _offload(d).get("optimizer", "none") != "none" and d.get("zeroStage", 2) < 1,
    ),
    fixed(
        "deepspeed",
        "!has(self.offload) || (self.offload.optimizer != 'nvme' && "
        "self.offload.parameters != 'nvme') || has(self.offload.nvmePath)",
        "spec.deepspeed.offload.nvmePath is required for nvme offload",
        ".offload.nvmePath",
        lambda d: (
            "nvme" in (_offload(d).get("optimizer"), _offload(d).get("parameters"))
            and not _offload(d).get("nvmePath")
        ),
    ),
    # Patience counts evaluations; without periodic ones there is only the final eval to compare.
    fixed(
        "training",
        "!has(self.earlyStopping) || has(self.evalEverySteps)",
        "spec.training.earlyStopping needs periodic evaluations: set spec.training.evalEverySteps",
        ".earlyStopping",
        lambda t: "earlyStopping" in t and "evalEverySteps" not in t,
    ),
    fixed(
        "training",
        "!(has(self.gradientCheckpointing) && self.gradientCheckpointing && "
        "has(self.performance) && has(self.performance.activationCheckpointing) && "
        "self.performance.activationCheckpointing == 'off')",
        "spec.training.performance.activationCheckpointing off conflicts with "
        "spec.training.gradientCheckpointing true: set only one of them",
        ".performance.activationCheckpointing",
        lambda t: (
            t.get("gradientCheckpointing") is True
            and (t.get("performance") or {}).get("activationCheckpointing") == "off"
        ),
    ),
    fixed(
        "",
        "self.method.type != 'qlora' || self.resources.gpusPerNode > 0",
        "spec.method.type qlora needs GPUs: set spec.resources.gpusPerNode >= 1",
        ".resources.gpusPerNode",
        lambda s: s["method"]["type"] == "qlora" and s["resources"].get("gpusPerNode") == 0,
    ),
    _needs_gpu("ligerKernels"),
    _needs_gpu("varlenAttention"),
    # bitsandbytes' 4-bit weights are neither sharded nor offloaded by ZeRO-3 in what is
    # tested here (tests/gpu runs QLoRA under ZeRO 0-2); refuse rather than run untested.
    fixed(
        "",
        "self.method.type != 'qlora' || !has(self.deepspeed) || (self.deepspeed.zeroStage != 3 "
        "&& (!has(self.deepspeed.offload) || self.deepspeed.offload.parameters == 'none'))",
        "spec.method.type qlora runs under spec.deepspeed.zeroStage 0, 1 or 2 without "
        "parameter offload: ZeRO-3 does not shard or offload 4-bit weights",
        ".deepspeed.zeroStage",
        lambda s: (
            s["method"]["type"] == "qlora"
            and (
                (s.get("deepspeed") or {}).get("zeroStage") == 3
                or _offload(s.get("deepspeed") or {}).get("parameters", "none") != "none"
            )
        ),
    ),
    # One trainer process drives one GPU; more processes than GPUs would share cuda devices.
    fixed(
        "resources",
        "!has(self.processesPerNode) || self.gpusPerNode == 0 || "
        "self.processesPerNode <= self.gpusPerNode",
        "spec.resources.processesPerNode must not exceed spec.resources.gpusPerNode (one "
        "process per GPU)",
        ".processesPerNode",
        lambda r: (
            "processesPerNode" in r
            and int(r.get("gpusPerNode", 0)) > 0
            and int(r["processesPerNode"]) > int(r["gpusPerNode"])
        ),
    ),
    fixed(
        "",
        "self.resources.gpusPerNode > 0 || !has(self.training) || "
        "!has(self.training.precision) || self.training.precision != 'fp16'",
        "spec.training.precision fp16 needs GPUs (CPU workers train in fp32 or bf16): set "
        "spec.resources.gpusPerNode >= 1 or another precision",
        ".training.precision",
        lambda s: (
            (s.get("training") or {}).get("precision") == "fp16"
            and s["resources"].get("gpusPerNode") == 0
        ),
    ),
    *(_derived_by_spec(key, owner) for key, owner in DEEPSPEED_DERIVED.items()),
    # A zero stall timeout would end every attempt before its first progress report.
    fixed(
        "runPolicy",
        f"!has(self.stallTimeout) || !self.stallTimeout.matches('{_ZERO_DURATION}')",
        "spec.runPolicy.stallTimeout must be longer than 0 (e.g. 30m)",
        ".stallTimeout",
        lambda rp: bool(re.fullmatch(_ZERO_DURATION, str(rp.get("stallTimeout", "")))),
    ),
    fixed(
        "",
        "has(self.output) || has(self.checkpoint)",
        "spec.output is required unless spec.checkpoint is set (the model then goes "
        "to <checkpoint.uri>/output)",
        ".output",
        lambda s: "output" not in s and "checkpoint" not in s,
    ),
    fixed(
        "",
        "!has(self.output) || !has(self.output.format) || self.output.format == 'merged' "
        "|| self.method.type in ['lora', 'qlora']",
        "spec.output.format adapter or both needs spec.method.type lora or qlora",
        ".output.format",
        lambda s: (
            (s.get("output") or {}).get("format") in ("adapter", "both")
            and s["method"]["type"] not in _ADAPTERS
        ),
    ),
    fixed(
        "",
        "!(has(self.training) && has(self.training.earlyStopping)) || "
        "has(self.dataset.validation) || has(self.dataset.validationSplit)",
        "spec.training.earlyStopping needs validation data: set spec.dataset.validation "
        "or spec.dataset.validationSplit",
        ".training.earlyStopping",
        lambda s: (
            "earlyStopping" in (s.get("training") or {})
            and "validation" not in s["dataset"]
            and "validationSplit" not in s["dataset"]
        ),
    ),
    *_RESULTS,
]


# --- env the operator sets ---------------------------------------------------------------
# What the operator and torchrun put in a worker's env, and what changes which code runs or
# where credentials go: a job may not set these (HF_ENDPOINT or AWS_ENDPOINT_URL would send the
# job's credentials to any host; the endpoint fields, checked by the platform policy, say it).
RESERVED_ENV = (
    "MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE",
    "NODE_RANK", "NNODES", "NPROC_PER_NODE", "GROUP_RANK", "POD_NAME", "PYTHONUNBUFFERED",
    "PATH", "LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "PYTHONPATH", "PYTHONHOME",
    "PYTHONSTARTUP",
)  # fmt: skip
RESERVED_ENV_PREFIXES = ("KUBETUNE_", "AWS_", "HF_", "TORCHELASTIC_")
# The trainer's own knobs a job may turn: its log level, where its metrics endpoint binds (the
# pod IP from a fieldRef), and the fault hooks tests inject failures with (they harm only the
# job that sets them).
JOB_SETTABLE_ENV = ("KUBETUNE_LOG_LEVEL", "KUBETUNE_METRICS_ADDR")
JOB_SETTABLE_PREFIX = "KUBETUNE_FAULT_"

_RESERVED_CEL = (
    f"(self.name in {cel_list(RESERVED_ENV)} || "
    + " || ".join(f"self.name.startsWith('{p}')" for p in RESERVED_ENV_PREFIXES)
    + f") && !(self.name in {cel_list(JOB_SETTABLE_ENV)} || "
    f"self.name.startsWith('{JOB_SETTABLE_PREFIX}'))"
)
_ENV_TAIL = (
    ": names kubetune reserves (the rendezvous, KUBETUNE_* but the trainer log level, metrics "
    "address and fault hooks, AWS_*, HF_*, PATH, LD_* and PYTHON* variables); set endpoints, "
    "regions and credentials with the fields of spec.model, spec.dataset, spec.checkpoint and "
    "spec.output"
)
assert "'" not in _ENV_TAIL  # it is also a CEL string literal


def reserved_env(name: str) -> bool:
    """Whether a job may not set env variable `name`."""
    if name in JOB_SETTABLE_ENV or name.startswith(JOB_SETTABLE_PREFIX):
        return False
    return name in RESERVED_ENV or name.startswith(RESERVED_ENV_PREFIXES)


def _env_shadows(var: Json) -> str | None:
    name = str(var.get("name", ""))
    return f"spec.resources.env: {name}{_ENV_TAIL}" if reserved_env(name) else None


# --- names, quantities and core/v1 rules ------------------------------------------------
# A qualified name (label key, resource name): an optional DNS-subdomain prefix and a name.
QUALIFIED_NAME = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_QUALIFIED = re.compile(QUALIFIED_NAME)
MAX_QUALIFIED = 317  # a 253-character prefix, "/", a 63-character name
GPU_RESOURCE = "nvidia.com/gpu"
_QUANTITY = re.compile(
    r"^(?P<num>[+-]?(\d+(\.\d*)?|\.\d+))(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|"
    r"[eE][+-]?\d+)?$"
)
_SCALE = {
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
    "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
    "P": Decimal("1e15"), "E": Decimal("1e18"), "Ki": Decimal(2**10), "Mi": Decimal(2**20),
    "Gi": Decimal(2**30), "Ti": Decimal(2**40), "Pi": Decimal(2**50), "Ei": Decimal(2**60),
}  # fmt: skip


def quantity(value: Any) -> Decimal | None:
    """A Kubernetes quantity (16, "500m", "1.5Gi", "1e3") as a number; None if it is none."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return None
    m = _QUANTITY.match(str(value))
    if not m:
        return None
    suffix = m.group("suffix") or ""
    scale = Decimal(10) ** int(suffix[1:]) if suffix[:1] in ("e", "E") else _SCALE[suffix]
    return Decimal(m.group("num")) * scale


def qualified(name: str) -> bool:
    """Whether `name` is a Kubernetes qualified name (label key, resource name)."""
    return len(name) <= MAX_QUALIFIED and bool(_QUALIFIED.match(name))


def _cel_qualified(var: str) -> str:
    return f"(size({var}) <= {MAX_QUALIFIED} && {var}.matches(r'{QUALIFIED_NAME}'))"


def bad_resource_names(amounts: Json) -> list[str]:
    """Keys of a requests/limits map that are no resource names (checked offline only: CEL
    cannot bound the length of map keys, so the CRD cannot afford to look at them)."""
    return [k for k in amounts if not qualified(k)]


_GPUS = (
    f": {GPU_RESOURCE} comes from spec.resources.gpusPerNode (requests and limits of "
    "it would contradict it)"
)


def _gpu_guard(which: str) -> Guard:
    def check(resources: Json) -> str | None:
        return (
            f"spec.resources.{which}{_GPUS}"
            if GPU_RESOURCE in (resources.get(which) or {})
            else None
        )

    return Guard(
        at="resources",
        cel=f"!has(self.{which}) || !('{GPU_RESOURCE}' in self.{which})",
        summary=f"spec.resources.{which}{_GPUS}",
        message_cel=f"'spec.resources.{which}{_GPUS}'",
        field=f".{which}",
        check=check,
    )


_BELOW = ": a limit is below its request"
_LIMIT_OK = (
    "!(k in self.limits) || !isQuantity(string(self.limits[k])) || "
    "!isQuantity(string(self.requests[k])) || "
    "quantity(string(self.limits[k])).compareTo(quantity(string(self.requests[k]))) >= 0"
)


def _limits_below_requests(resources: Json) -> str | None:
    requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
    for key, request in requests.items():
        lim, req = quantity(limits.get(key)), quantity(request)
        if key in limits and lim is not None and req is not None and lim < req:
            return f"spec.resources.limits{_BELOW}"
    return None


def _toleration(problem: str, ok: Callable[[Json], bool]) -> Callable[[Json], str | None]:
    return lambda t: None if ok(t) else f"spec.resources.tolerations: {problem}"


_TOLERATION_RULES = [
    (
        "a toleration without a key needs operator Exists (it then tolerates every taint)",
        "(has(self.key) && self.key != '') || (has(self.operator) && self.operator == 'Exists')",
        lambda t: bool(t.get("key")) or t.get("operator") == "Exists",
    ),
    (
        "operator Exists takes no value",
        "!(has(self.operator) && self.operator == 'Exists' && has(self.value) && self.value != '')",
        lambda t: not (t.get("operator") == "Exists" and t.get("value")),
    ),
    (
        "tolerationSeconds needs effect NoExecute",
        "!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
        lambda t: "tolerationSeconds" not in t or t.get("effect") == "NoExecute",
    ),
    (
        "key must be a label key",
        f"!has(self.key) || self.key == '' || {_cel_qualified('self.key')}",
        lambda t: not t.get("key") or qualified(t["key"]),
    ),
]

_SOURCES = ("secretKeyRef", "configMapKeyRef", "fieldRef", "resourceFieldRef", "fileKeyRef")
_ONE_SOURCE_CEL = " + ".join(f"(has(self.valueFrom.{k}) ? 1 : 0)" for k in _SOURCES) + " == 1"
_LITERAL_SECRET = (
    ": looks like a credential: take it from a Secret (valueFrom.secretKeyRef), a literal "
    "value is visible to anyone who can read the pod"
)


def _env_value(var: Json) -> str | None:
    name = str(var.get("name", ""))
    if "value" in var and "valueFrom" in var:
        return f"spec.resources.env: {name}: set value or valueFrom, not both"
    source = var.get("valueFrom")
    if isinstance(source, dict) and sum(k in source for k in _SOURCES) != 1:
        return f"spec.resources.env: {name}: valueFrom names exactly one source"
    if "value" in var and looks_secret(name):
        return f"spec.resources.env: {name}{_LITERAL_SECRET}"
    return None


def _same_place(a: str, b: str) -> str:
    """CEL: two URIs name the same place (a trailing slash aside)."""
    return f"({a} == {b} || {a} == {b} + '/' || {a} + '/' == {b})"


def _same(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and a.rstrip("/") == b.rstrip("/")


_OVER_MODEL = ": the same location as spec.model.source: the export would overwrite the base model"
_OVER_CKPT = ": the same location as spec.checkpoint.uri: retention would delete the exported model"


INPUT: list[Guard] = [
    _gpu_guard("requests"),
    _gpu_guard("limits"),
    Guard(
        at="resources",
        cel=f"!has(self.limits) || !has(self.requests) || self.requests.all(k, {_LIMIT_OK})",
        summary=f"spec.resources.limits{_BELOW}",
        message_cel=f"'spec.resources.limits{_BELOW}'",
        field=".limits",
        check=_limits_below_requests,
    ),
    *[
        Guard(
            at="resources.tolerations[]",
            cel=cel,
            summary=f"spec.resources.tolerations: {problem}",
            message_cel=f"'spec.resources.tolerations: {problem}'",
            field="",
            check=_toleration(problem, ok),
        )
        for problem, cel, ok in _TOLERATION_RULES
    ],
    Guard(
        at="resources.env[]",
        cel="!(has(self.value) && has(self.valueFrom))",
        summary="spec.resources.env: set value or valueFrom, not both",
        message_cel="'spec.resources.env: ' + self.name + ': set value or valueFrom, not both'",
        field="",
        check=lambda v: _env_value(v) if "value" in v and "valueFrom" in v else None,
    ),
    Guard(
        at="resources.env[]",
        cel=f"!has(self.valueFrom) || {_ONE_SOURCE_CEL}",
        summary="spec.resources.env: valueFrom names exactly one source",
        message_cel="'spec.resources.env: ' + self.name + ': valueFrom names exactly one source'",
        field=".valueFrom",
        check=lambda v: _env_value(v) if "value" not in v and "valueFrom" in v else None,
    ),
    Guard(
        at="resources.env[]",
        cel=f"!has(self.value) || has(self.valueFrom) || !self.name.matches('{SECRET_NAME}')",
        summary=f"spec.resources.env: a credential{_LITERAL_SECRET}",
        message_cel=f"'spec.resources.env: ' + self.name + '{_LITERAL_SECRET}'",
        field=".value",
        check=lambda v: _env_value(v) if "valueFrom" not in v else None,
    ),
    Guard(
        at="",
        cel=f"!has(self.output) || !{_same_place('self.output.uri', 'self.model.source')}",
        summary=f"spec.output.uri{_OVER_MODEL}",
        message_cel=f"'spec.output.uri{_OVER_MODEL}'",
        field=".output.uri",
        check=lambda spec: (
            f"spec.output.uri{_OVER_MODEL}"
            if _same((spec.get("output") or {}).get("uri"), spec["model"]["source"])
            else None
        ),
    ),
    Guard(
        at="",
        cel="!has(self.output) || !has(self.checkpoint) || "
        f"!{_same_place('self.output.uri', 'self.checkpoint.uri')}",
        summary=f"spec.output.uri{_OVER_CKPT}",
        message_cel=f"'spec.output.uri{_OVER_CKPT}'",
        field=".output.uri",
        check=lambda spec: (
            f"spec.output.uri{_OVER_CKPT}"
            if _same(
                (spec.get("output") or {}).get("uri"), (spec.get("checkpoint") or {}).get("uri")
            )
            else None
        ),
    ),
    Guard(
        at="resources.env[]",
        cel=f"!({_RESERVED_CEL})",
        summary=f"spec.resources.env: a job may not set{_ENV_TAIL}",
        message_cel=f"'spec.resources.env: ' + self.name + '{_ENV_TAIL}'",
        field=".name",
        check=_env_shadows,
    ),
]

GUARDS: list[Guard] = [*CROSS_FIELD, *INPUT]
"""Every rule with an offline twin, in the order offline validation reports them."""


def problems(spec: Json) -> list[str]:
    """The message of every guard a spec (camelCase JSON, defaults filled in) breaks, in
    GUARDS order."""
    out = []
    for guard in GUARDS:
        if guard.check is None:
            continue
        for value in node(spec, guard.at):
            message = guard.check(value)
            if message:
                out.append(message)
    return out


def attach(spec_schema: Json, guards: list[Guard] = GUARDS) -> Json:
    """The spec's structural schema with every guard's CEL rule at its node, in order."""
    for guard in guards:
        target = spec_schema
        for step in guard.at.split(".") if guard.at else []:
            target = target["properties"][step.removesuffix("[]")]
            if step.endswith("[]"):
                target = target["items"]
        target.setdefault("x-kubernetes-validations", []).append(guard.rule())
        if "default" in target:  # the default stays last, as in every other node
            target["default"] = target.pop("default")
    return spec_schema


# --- immutability: CEL transition rules, derived from the spec model --------------------------
MUTABLE = ("runPolicy.suspend",)
"""The only spec field that may change after creation."""


def _unchanged(path: str) -> str:
    """CEL: `path` (under self / oldSelf) was not added, removed or changed."""
    return f"has(self.{path}) == has(oldSelf.{path}) && (!has(self.{path}) || self.{path} == oldSelf.{path})"


def _aliases(model: Any) -> list[str]:
    """A model's field names as the manifest spells them, in declaration order."""
    return [f.alias or name for name, f in model.model_fields.items()]


def _nested(model: Any, field: str) -> Any:
    """The model class a field of `model` holds."""
    for name, f in model.model_fields.items():
        if (f.alias or name) == field:
            return f.annotation
    raise KeyError(field)


def immutability(spec_model: Any) -> list[Guard]:
    """One transition rule per spec field, and one for runPolicy that spares MUTABLE.

    Derived from the model, so a new spec field is immutable without being listed anywhere.
    """
    parents = {m.partition(".")[0] for m in MUTABLE}
    out = []
    for field in _aliases(spec_model):
        if field in parents:
            continue
        message = (
            f"spec.{field} is immutable once the job is created (only spec.runPolicy.suspend "
            "may change)"
        )
        out.append(Guard("", _unchanged(field), message, None, f".{field}", None))
    for parent in sorted(parents):
        kept = [f"{parent}.{f}" for f in _aliases(_nested(spec_model, parent))]
        parts = [f"({_unchanged(p)})" for p in kept if p not in MUTABLE]
        cel = f"!has(self.{parent}) || !has(oldSelf.{parent}) || (" + " && ".join(parts) + ")"
        spared = ", ".join(f"spec.{m}" for m in MUTABLE if m.startswith(parent + "."))
        message = f"spec.{parent} is immutable once the job is created, except {spared}"
        out.append(Guard("", cel, message, None, f".{parent}", None))
    return out
