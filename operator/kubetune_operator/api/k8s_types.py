"""Kubernetes types a FineTuneJob embeds (core/v1 Toleration, Affinity, EnvVarSource), typed
from the Kubernetes OpenAPI instead of free-form objects.

k8s_types.json holds their structural schemas, extracted from kube-apiserver's
/openapi/v3/api/v1 by `extract` (hack/gen_k8s_types.py; a k8s test checks the file against the
apiserver the tests run) with every list, map and string bounded. The CRD embeds them, so the
apiserver refuses a wrong type, an unknown enum value or any depth beyond the type's own; the
offline validator checks the same schema with `problems`.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

SOURCE = Path(__file__).with_name("k8s_types.json")
TYPES = {
    "Toleration": "io.k8s.api.core.v1.Toleration",
    "Affinity": "io.k8s.api.core.v1.Affinity",
    "EnvVarSource": "io.k8s.api.core.v1.EnvVarSource",
}
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
# Bounds the OpenAPI leaves open; far above what a pod needs.
MAX_ITEMS, MAX_PROPERTIES, MAX_LENGTH = 64, 64, 1024
_KEEP = (
    "type", "format", "enum", "required", "properties", "items", "additionalProperties",
    "x-kubernetes-list-type", "x-kubernetes-list-map-keys", "x-kubernetes-map-type",
)  # fmt: skip


def _summary(text: str) -> str:
    """The first sentence of an OpenAPI description."""
    first = text.split("\n", 1)[0].strip()
    head, dot, _ = first.partition(". ")
    return head + "." if dot else first


def _schema(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """One OpenAPI node as a bounded structural schema, references inlined."""
    ref = (node.get("allOf") or [{}])[0].get("$ref") or node.get("$ref")
    if ref:
        name = ref.rsplit("/", 1)[-1]
        if name == QUANTITY:
            return {"x-kubernetes-int-or-string": True, "description": "A quantity."}
        inner = _schema(defs[name], defs)
        if node.get("description"):
            inner["description"] = _summary(node["description"])
        return inner
    out: dict[str, Any] = {k: node[k] for k in _KEEP if k in node}
    if node.get("description"):
        out["description"] = _summary(node["description"])
    if "properties" in out:
        out["properties"] = {k: _schema(v, defs) for k, v in out["properties"].items()}
    if "items" in out:
        out["items"] = _schema(out["items"], defs)
        out["maxItems"] = MAX_ITEMS
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = _schema(out["additionalProperties"], defs)
        out["maxProperties"] = MAX_PROPERTIES
    if out.get("type") == "string" and "enum" not in out:
        out["maxLength"] = MAX_LENGTH
    if out.get("type") == "integer":  # within the integer's own width
        bits = 31 if out.get("format") == "int32" else 63
        out.update(minimum=-(2**bits), maximum=2**bits - 1)
    return out


def extract(openapi: dict[str, Any]) -> dict[str, Any]:
    """The embedded types' schemas from kube-apiserver's /openapi/v3/api/v1 document."""
    defs = openapi["components"]["schemas"]
    return {short: _schema(defs[full], defs) for short, full in TYPES.items()}


@cache
def schemas() -> dict[str, Any]:
    """The committed schemas (k8s_types.json)."""
    return dict(json.loads(SOURCE.read_text()))


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
}


def problems(value: Any, schema: dict[str, Any], path: str) -> list[str]:
    """Where `value` breaks a structural schema, as "path: what" lines (as the apiserver would
    refuse it with strict field validation: unknown fields are refused too)."""
    if schema.get("x-kubernetes-int-or-string"):
        ok = isinstance(value, (int, str)) and not isinstance(value, bool)
        return [] if ok else [f"{path}: must be an integer or a string"]
    kind = schema.get("type")
    if kind is not None:
        expected = _JSON_TYPES[kind]
        if not isinstance(value, expected) or (isinstance(value, bool) and bool not in expected):
            return [f"{path}: must be of type {kind}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{path}: must be one of {', '.join(map(str, schema['enum']))}"]
    if isinstance(value, str) and len(value) > schema.get("maxLength", len(value)):
        return [f"{path}: longer than {schema['maxLength']} characters"]
    if isinstance(value, int) and not schema.get("minimum", value) <= value <= schema.get(
        "maximum", value
    ):
        return [f"{path}: must be within {schema['minimum']} and {schema['maximum']}"]
    if isinstance(value, list):
        if len(value) > schema.get("maxItems", len(value)):
            return [f"{path}: more than {schema['maxItems']} items"]
        return [
            p for i, v in enumerate(value) for p in problems(v, schema["items"], f"{path}[{i}]")
        ]
    if isinstance(value, dict):
        return _object_problems(value, schema, path)
    return []


def _object_problems(value: dict[str, Any], schema: dict[str, Any], path: str) -> list[str]:
    if len(value) > schema.get("maxProperties", len(value)):
        return [f"{path}: more than {schema['maxProperties']} entries"]
    out = [f"{path}.{k}: required" for k in schema.get("required", []) if k not in value]
    props, extra = schema.get("properties"), schema.get("additionalProperties")
    for key, child in value.items():
        if child is None:  # the apiserver prunes nulls
            continue
        if props is not None and key in props:
            out += problems(child, props[key], f"{path}.{key}")
        elif isinstance(extra, dict):
            out += problems(child, extra, f"{path}.{key}")
        else:
            out.append(f"{path}.{key}: unknown field")
    return out
