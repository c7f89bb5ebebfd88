"""Build the FineTuneJob CustomResourceDefinition from the pydantic models.

Pydantic emits JSON Schema with $refs and anyOf-null for optionals; Kubernetes wants a
structural OpenAPI v3 schema: everything inlined, one type per node, no null. `structural`
does that translation; `guards.attach` then puts each rule of api/guards.py on the node it is
written for, so `make crds` is a pure function of api/.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from kubetune_operator.api import constants as c
from kubetune_operator.api import guards
from kubetune_operator.api.spec import JOB_NAME_PATTERN, MAX_JOB_NAME_LENGTH, FineTuneJobSpec
from kubetune_operator.api.status import FineTuneJobStatus

_DROP_KEYS = {"title", "$defs", "additionalProperties_"}


def _resolve_ref(ref: str, defs: dict[str, Any]) -> dict[str, Any]:
    """The definition a local $ref points at."""
    return copy.deepcopy(defs[ref.rsplit("/", 1)[-1]])


def _strip_null(node: dict[str, Any]) -> dict[str, Any]:
    """anyOf [X, null] -> X (optional fields are simply omitted in Kubernetes)."""
    options = node.get("anyOf")
    if not options:
        return node
    non_null = [o for o in options if o.get("type") != "null"]
    if len(non_null) == 1:
        merged = {k: v for k, v in node.items() if k != "anyOf"}
        inner = dict(non_null[0])
        inner.update(merged)
        if inner.get("default", ...) is None:
            inner.pop("default")
        return inner
    return node


def structural(node: Any, defs: dict[str, Any]) -> Any:
    """Translate a pydantic JSON-schema node into a structural Kubernetes schema node."""
    if isinstance(node, list):
        return [structural(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    node = _strip_null(dict(node))
    if "$ref" in node:
        target = _resolve_ref(node.pop("$ref"), defs)
        # The field's own description wins over the class docstring.
        target.update({k: v for k, v in node.items() if k != "default" or not isinstance(v, dict)})
        if isinstance(node.get("default"), dict):
            target["default"] = {}
        node = _strip_null(target)
    if node.get("x-kubernetes-int-or-string"):
        scalar = ("x-kubernetes-int-or-string", "description", "pattern", "maxLength", "minimum")
        return {k: v for k, v in node.items() if k in scalar}
    if node.get("x-kubernetes-preserve-unknown-fields"):
        # Declared properties of a free-form object are what CEL rules may read in it.
        keep = ("type", "description", "maxProperties", "x-kubernetes-preserve-unknown-fields")
        free = {k: v for k, v in node.items() if k in keep}
        if "properties" in node:
            free["properties"] = {n: structural(v, defs) for n, v in node["properties"].items()}
        return free
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP_KEYS:
            continue
        if key == "properties":
            out[key] = {name: structural(v, defs) for name, v in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = structural(value, defs)
        elif key == "default" and isinstance(value, dict):
            out[key] = {}
        else:
            out[key] = value
    if "properties" in out:
        out.setdefault("type", "object")
        # pydantic's extra="forbid" => additionalProperties false; K8s prunes unknown fields.
        if out.get("additionalProperties") is False:
            out.pop("additionalProperties")
    if out.get("type") == "object" and "additionalProperties" in out and "properties" in out:
        out.pop("additionalProperties")
    if "exclusiveMinimum" in out and not isinstance(out["exclusiveMinimum"], bool):
        out["minimum"], out["exclusiveMinimum"] = out["exclusiveMinimum"], True
    if "exclusiveMaximum" in out and not isinstance(out["exclusiveMaximum"], bool):
        out["maximum"], out["exclusiveMaximum"] = out["exclusiveMaximum"], True
    if out.get("type") == "string" and out.get("format") == "date-time":
        out.pop("format")
    if "default" in out and out["default"] is None:
        out.pop("default")
    if "const" in out:  # a one-value Literal; OpenAPI v3 in Kubernetes has no const
        out["enum"] = [out.pop("const")]
    return out


class _FactoryDefaults(GenerateJsonSchema):
    """Also emit defaults of default_factory fields (pydantic leaves them out), so the
    apiserver fills in an omitted `training: {}` and, through it, every nested default."""

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        factory = schema.get("default_factory")
        if factory is None or schema.get("default_factory_takes_data"):
            return super().default_schema(schema)
        value = factory()  # type: ignore[call-arg]
        json_schema = self.generate_inner(schema["schema"])
        json_schema["default"] = {} if isinstance(value, BaseModel) else self.encode_default(value)
        return json_schema


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural schema of one pydantic model, camelCase names, all refs inlined."""
    raw = model.model_json_schema(
        by_alias=True, mode="validation", schema_generator=_FactoryDefaults
    )
    defs = raw.pop("$defs", {})
    return structural(raw, defs)


PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "Job phase."},
    {
        "name": "Progress",
        "type": "string",
        "jsonPath": ".status.progress.summary",
        "description": "Optimizer steps done / planned (percent).",
    },
    {
        "name": "Loss",
        "type": "number",
        "jsonPath": ".status.progress.loss",
        "description": "Training loss.",
    },
    {
        "name": "ETA",
        "type": "string",
        "jsonPath": ".status.progress.eta",
        "description": "Time left.",
    },
    {
        "name": "Restarts",
        "type": "integer",
        "jsonPath": ".status.restarts",
        "description": "Attempts restarted after a failure.",
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Method", "type": "string", "jsonPath": ".spec.method.type", "priority": 1},
    {"name": "Workers", "type": "integer", "jsonPath": ".spec.resources.nodes", "priority": 1},
    {"name": "Step", "type": "integer", "jsonPath": ".status.progress.step", "priority": 1},
    {"name": "Eval-Loss", "type": "number", "jsonPath": ".status.progress.evalLoss", "priority": 1},
    {
        "name": "Objective",
        "type": "string",
        "jsonPath": ".spec.method.objective",
        "description": "sft or dpo.",
        "priority": 1,
    },
    {
        "name": "Pref-Acc",
        "type": "number",
        "jsonPath": ".status.progress.preference.evalAccuracy",
        "description": "Preference accuracy on the validation pairs (objective dpo).",
        "priority": 1,
    },
    {
        "name": "Margin",
        "type": "number",
        "jsonPath": ".status.progress.preference.evalRewardMargin",
        "description": "Mean chosen minus rejected reward on the validation pairs (objective dpo).",
        "priority": 1,
    },
]


def name_rules(limit: int, why: str) -> list[dict[str, str]]:
    """Root CEL rules on metadata.name: a DNS label of at most `limit` characters."""
    return [
        {
            "rule": f"self.metadata.name.size() <= {limit}",
            "message": f"metadata.name must be at most {limit} characters ({why})",
        },
        {
            "rule": f"self.metadata.name.matches('{JOB_NAME_PATTERN}')",
            "message": "metadata.name must be a DNS label: lower-case letters, digits and '-', "
            f"starting with a letter ({why})",
        },
    ]


def custom_resource_definition(
    names: dict[str, Any],
    description: str,
    spec_schema: dict[str, Any],
    status_schema: dict[str, Any],
    columns: list[dict[str, Any]],
    root_rules: list[dict[str, str]],
) -> dict[str, Any]:
    """A namespaced kubetune.dev CRD with a status subresource, as a plain dict."""
    root = {
        "type": "object",
        "description": description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec_schema,
            "status": status_schema,
        },
        "x-kubernetes-validations": root_rules,
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{names['plural']}.{c.GROUP}",
            "labels": {
                "app.kubernetes.io/name": "kubetune",
                "app.kubernetes.io/part-of": "kubetune",
            },
        },
        "spec": {
            "group": c.GROUP,
            "names": {
                "kind": names["kind"],
                "listKind": f"{names['kind']}List",
                "plural": names["plural"],
                "singular": names["singular"],
                "shortNames": list(names["shortNames"]),
                "categories": list(c.CATEGORIES),
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": c.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def build_crd() -> dict[str, Any]:
    """The FineTuneJob CRD as a plain dict, ready to dump as YAML."""
    rules = [*guards.CROSS_FIELD, *guards.immutability(FineTuneJobSpec), *guards.INPUT]
    spec_schema = guards.attach(model_schema(FineTuneJobSpec), rules)
    spec_schema["description"] = (
        "What to fine-tune, on what data, how, and where checkpoints and the model go. "
        "Immutable after creation except runPolicy.suspend."
    )
    status_schema = model_schema(FineTuneJobStatus)
    status_schema["description"] = (
        "Observed state, written by the operator (progress and checkpoints by the trainer)."
    )
    return custom_resource_definition(
        {"kind": c.KIND, "plural": c.PLURAL, "singular": c.SINGULAR, "shortNames": c.SHORT_NAMES},
        "FineTuneJob fine-tunes a Hugging Face causal LM with DeepSpeed ZeRO on a gang of workers.",
        spec_schema,
        status_schema,
        PRINTER_COLUMNS,
        name_rules(MAX_JOB_NAME_LENGTH, "worker pod hostnames derive from it"),
    )


def crd_yaml(plural: str = c.PLURAL) -> str:
    """A CRD as YAML text, stable byte for byte (what `make crds` writes)."""
    import yaml

    from kubetune_operator.api.lifecycle_crds import BUILDERS

    builders = {c.PLURAL: build_crd, **BUILDERS}
    header = "# Generated by `make crds` from operator/kubetune_operator/api. Do not edit.\n"
    return header + yaml.safe_dump(builders[plural](), sort_keys=False, width=100)
