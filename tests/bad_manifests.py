"""A generator of bad FineTuneJob manifests: mutations of every example in examples/ (each leaf
set to values of the wrong type, beyond its bounds, against its pattern or enum, too long or too
many) plus hand-written hostile cases (path traversal, reserved env, credentials in the open,
contradictions, core/v1 rules, deep and huge objects). Each case names the field both validators
must blame. tests/unit/test_bad_manifests.py runs every case through `kubetune validate`,
tests/k8s/test_bad_manifests.py through the apiserver (dry run, strict field validation).
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from kubetune_operator.api.crd import build_crd
from kubetune_operator.api.guards import RESERVED_ENV

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.yaml"))
Manifest = dict[str, Any]


@dataclass(frozen=True)
class BadCase:
    """One bad manifest, the field both validators must name, and where it can go."""

    category: str
    id: str
    manifest: Manifest
    field: str
    json: bool = True  # False: no JSON can carry it (inf, NaN): offline only
    apiserver_admits: str = ""  # why the apiserver cannot refuse it (the operator does)

    def text(self) -> str:
        """The manifest as a file: JSON (which YAML reads too), YAML where JSON cannot say it."""
        if self.json:
            return json.dumps(self.manifest, ensure_ascii=False)
        return yaml.safe_dump(self.manifest, sort_keys=False, allow_unicode=True, width=1000)


@dataclass
class Stats:
    """One row of the generator's table."""

    cases: int = 0
    refused: int = 0
    named: int = 0
    crashes: int = 0
    accepted: list[str] = field(default_factory=list)


@cache
def example_jobs() -> list[tuple[str, Manifest]]:
    """Every FineTuneJob document of examples/, by file stem (read once; copy before use)."""
    out = []
    for path in EXAMPLES:
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "FineTuneJob":
                out.append((path.stem, doc))
    return out


@cache
def spec_schema() -> dict[str, Any]:
    """The CRD's spec schema (bounds, patterns and enums come from it)."""
    version = build_crd()["spec"]["versions"][0]
    return dict(version["schema"]["openAPIV3Schema"]["properties"]["spec"])


def schema_at(path: tuple[str | int, ...]) -> dict[str, Any] | None:
    """The schema node of a manifest path under spec (None where it is free-form)."""
    node: dict[str, Any] | None = spec_schema()
    for step in path:
        if node is None or node.get("x-kubernetes-preserve-unknown-fields"):
            return None
        if isinstance(step, int):
            node = node.get("items")
        elif step in (node.get("properties") or {}):
            node = node["properties"][step]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            return None
    return node


def leaves(node: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    """Paths of every scalar (and of empty lists and maps) under a spec."""
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from leaves(value, (*path, key))
    elif isinstance(node, list) and node and isinstance(node[0], dict):
        for i, value in enumerate(node):
            yield from leaves(value, (*path, i))
    else:
        yield path


def named(path: tuple[str | int, ...]) -> str:
    """The field a validator names for `path`: up to the last object field (list indices and
    map keys are spelled differently by each)."""
    parts = ["spec"]
    node: dict[str, Any] | None = spec_schema()
    for step in path:
        if node is None or isinstance(step, int):
            break
        props = node.get("properties") or {}
        if step not in props:
            break
        parts.append(step)
        node = props[step]
        if node.get("type") == "array":
            node = node.get("items")
            if node is not None and node.get("type") != "object":
                break
    return ".".join(parts)


def setting(m: Manifest, path: tuple[str | int, ...], value: Any) -> Manifest:
    """A copy of manifest m with spec.<path> set to value."""
    out = copy.deepcopy(m)
    node = out["spec"]
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    return out


def wrong_types(schema: dict[str, Any]) -> list[tuple[str, Any]]:
    """Values no schema of this kind takes."""
    if schema.get("x-kubernetes-int-or-string"):
        return [("list", ["1"]), ("object", {"a": 1}), ("bool", True)]
    kind = schema.get("type")
    table: dict[str, list[tuple[str, Any]]] = {
        "string": [("int", 7), ("list", ["x"]), ("object", {"x": "y"}), ("bool", True)],
        "integer": [("string", "7"), ("fraction", 1.5), ("list", [1]), ("bool", False)],
        "number": [("string", "0.5"), ("list", [0.5]), ("object", {"v": 1}), ("bool", True)],
        "boolean": [("string", "yes"), ("int", 1), ("list", [True])],
        "array": [("string", "x"), ("object", {"a": "b"})],
        "object": [("string", "x"), ("list", [1])],
    }
    return table.get(kind or "", [])


def beyond(schema: dict[str, Any]) -> list[tuple[str, Any]]:
    """Values just past the schema's bounds, patterns and enums."""
    out: list[tuple[str, Any]] = []
    if schema.get("type") in ("integer", "number"):
        step = 1 if schema.get("type") == "integer" else 0.001
        if "minimum" in schema:
            low = schema["minimum"] if schema.get("exclusiveMinimum") else schema["minimum"] - step
            out.append(("below-minimum", low))
        if "maximum" in schema:
            high = schema["maximum"] if schema.get("exclusiveMaximum") else schema["maximum"] + step
            out.append(("above-maximum", high))
        if schema.get("type") == "integer":
            out += [("beyond-int64", 2**63), ("below-int64", -(2**63) - 1)]
    if schema.get("type") == "string":
        if "enum" in schema:
            out += [
                ("not-in-enum", "bogus"),
                ("enum-wrong-case", str(schema["enum"][0]).upper() + "x"),
            ]
        if "maxLength" in schema:
            out.append(("too-long", "a" * (schema["maxLength"] + 1)))
        if "pattern" in schema:
            out += [
                ("pattern-space", "has space"),
                ("pattern-traversal", "s3://bucket/a/../../etc"),
                ("pattern-empty", ""),
            ]
    if schema.get("type") == "array" and "maxItems" in schema:
        items = schema.get("items") or {}
        item: Any = {"key": "k", "operator": "Exists"} if items.get("type") == "object" else "x"
        out.append(("too-many-items", [item] * (schema["maxItems"] + 1)))
    if schema.get("type") == "object" and "maxProperties" in schema:
        out.append(("too-many-keys", {f"k{i}": "1" for i in range(schema["maxProperties"] + 1)}))
    return out


def mutations() -> Iterator[BadCase]:
    """Every leaf of every example set to wrong types and past its bounds."""
    for stem, doc in example_jobs():
        for path in leaves(doc["spec"]):
            schema = schema_at(path)
            if schema is None or not path:
                continue
            where = ".".join(str(p) for p in path)
            for label, value in wrong_types(schema):
                yield BadCase(
                    "type", f"{stem}:{where}={label}", setting(doc, path, value), named(path)
                )
            for label, value in beyond(schema):
                if schema.get("pattern") and _matches(schema["pattern"], value):
                    continue  # this probe happens to be valid for the field
                yield BadCase(
                    "bounds", f"{stem}:{where}={label}", setting(doc, path, value), named(path)
                )
            if schema.get("type") == "number":
                for label, value in (("inf", math.inf), ("nan", math.nan)):
                    yield BadCase(
                        "inf-nan",
                        f"{stem}:{where}={label}",
                        setting(doc, path, value),
                        named(path),
                        json=False,
                    )


def _matches(pattern: str, value: Any) -> bool:
    import re

    return isinstance(value, str) and re.search(pattern, value) is not None


def base() -> Manifest:
    """The 2x8 LoRA example on S3: the canvas of the hand-written cases."""
    return copy.deepcopy(dict(example_jobs())["lora-2x8-s3"])


def _put(m: Manifest, dotted: str, value: Any) -> Manifest:
    out = copy.deepcopy(m)
    *parents, leaf = dotted.split(".")
    node = out
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    return out


def case(category: str, id: str, dotted: str, value: Any, fld: str, **kw: Any) -> BadCase:
    """A hand-written case: the base manifest with `dotted` (from the root) set to value."""
    return BadCase(category, id, _put(base(), dotted, value), fld, **kw)


def env_case(category: str, id: str, env: list[dict[str, Any]], **kw: Any) -> BadCase:
    return case(category, id, "spec.resources.env", env, "spec.resources.env", **kw)


URI_FIELDS = {
    "spec.model.source": "model",
    "spec.dataset.train": "data",
    "spec.dataset.validation": "data",
    "spec.checkpoint.uri": "storage",
    "spec.output.uri": "storage",
}
BAD_URIS = [
    ("dotdot", "s3://bucket/a/../../other-team"),
    ("dot", "s3://bucket/./x"),
    ("double-slash", "s3://bucket//abs/path"),
    ("empty-bucket", "s3:///key"),
    ("short-bucket", "s3://b/key"),
    ("upper-bucket", "s3://Bucket/key"),
    ("underscore-bucket", "s3://my_bucket/key"),
    ("no-scheme", "/data/x"),
    ("unknown-scheme", "gs://bucket/x"),
    ("http", "https://example.org/model"),
    ("pvc-upper", "pvc://Claim/x"),
    ("pvc-empty", "pvc:///x"),
    ("pvc-dotdot", "pvc://claim/../other"),
    ("file-root", "file:///"),
    ("file-dotdot", "file:///data/../etc/shadow"),
    ("file-empty", "file://"),
    ("space", "s3://bucket/a b"),
    ("newline", "s3://bucket/a\nb"),
    ("ftj-upper", "ftj://Other"),
    ("ftj-path", "ftj://other/x"),
    ("hf-no-name", "hf://org"),
    ("hf-dotdot", "hf://org/name/../../x"),
    ("nul", "s3://bucket/a\u0000b"),
]
BAD_NAMES = [
    ("empty", ""),
    ("upper", "Admin"),
    ("underscore", "my_secret"),
    ("space", "my secret"),
    ("slash", "a/b"),
    ("dotdot", ".."),
    ("leading-dash", "-x"),
    ("too-long", "a" * 254),
    ("unicode", "sécret"),
]
NAME_FIELDS = [
    "spec.model.credentialsSecret",
    "spec.dataset.credentialsSecret",
    "spec.checkpoint.credentialsSecret",
    "spec.output.credentialsSecret",
    "spec.resources.serviceAccountName",
    "spec.resources.priorityClassName",
    "spec.resources.schedulerName",
]


MAP_KEYS = (
    "a map key: CEL cannot bound the length of map keys, so the CRD cannot afford to check "
    "them; kubetune validate refuses it, and the operator fails the job (InvalidSpec) with the "
    "apiserver's refusal of its pods"
)


def hand_written() -> Iterator[BadCase]:
    """Hostile cases written out: each one an attack or a contradiction."""
    for fld, kind in URI_FIELDS.items():
        for label, uri in BAD_URIS:
            if kind != "model" and label.startswith(("ftj", "hf")) and kind == "storage":
                pass  # refused as an unknown scheme there: still a case
            yield case("uri", f"{fld}={label}", fld, uri, fld)
    for label, uri in BAD_URIS[:12]:
        yield case(
            "uri", f"resume={label}", "spec.checkpoint.resume", uri, "spec.checkpoint.resume"
        )
    yield case(
        "uri",
        "resume-no-checkpoint",
        "spec.checkpoint.resume",
        "s3://ckpt/run",
        "spec.checkpoint.resume",
    )
    yield case("uri", "resume-latest", "spec.checkpoint.resume", "latest", "spec.checkpoint.resume")
    for fld in NAME_FIELDS:
        for label, name in BAD_NAMES:
            yield case("refs", f"{fld}={label}", fld, name, fld)
    for label, name in BAD_NAMES:
        yield case(
            "refs",
            f"imagePullSecrets={label}",
            "spec.resources.imagePullSecrets",
            [name],
            "spec.resources.imagePullSecrets",
        )
    for label, name in [*BAD_NAMES, ("dots-end", "queue."), ("too-long-label", "q" * 64)]:
        if label == "too-long":
            continue
        yield case("refs", f"queue={label}", "spec.queue", {"name": name}, "spec.queue.name")
    for label, image in [
        ("empty", ""),
        ("space", "ghcr.io/x y"),
        ("newline", "a\nb"),
        ("too-long", "i" * 513),
    ]:
        yield case("refs", f"image={label}", "spec.resources.image", image, "spec.resources.image")
    for label, name in [
        ("upper", "Job"),
        ("digit-first", "1job"),
        ("too-long", "j" * 46),
        ("dot", "a.b"),
        ("empty", ""),
    ]:
        yield case("refs", f"metadata.name={label}", "metadata.name", name, "metadata.name")

    # env: what the operator sets, and core/v1 rules
    reserved = [*RESERVED_ENV, "KUBETUNE_CHECKPOINT_KEY", "KUBETUNE_CONFIG", "AWS_ENDPOINT_URL",
                "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "HF_ENDPOINT", "HF_TOKEN",
                "HF_HUB_OFFLINE", "TORCHELASTIC_RUN_ID"]  # fmt: skip
    for name in reserved:
        yield env_case("env", f"reserved={name}", [{"name": name, "value": "x"}])
        yield env_case(
            "env",
            f"reserved-from={name}",
            [{"name": name, "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
        )
    for name in (
        "WANDB_API_KEY",
        "DB_PASSWORD",
        "GITHUB_TOKEN",
        "my_secret",
        "apiKey",
        "OPENAI_API_KEY",
        "SIGNING_KEY",
        "db.password",
    ):
        yield env_case(
            "secrets", f"literal-credential={name}", [{"name": name, "value": "hunter2hunter2"}]
        )
    for label, var in [
        (
            "value-and-from",
            {"name": "X", "value": "1", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ),
        (
            "two-sources",
            {
                "name": "X",
                "valueFrom": {
                    "fieldRef": {"fieldPath": "metadata.name"},
                    "secretKeyRef": {"name": "s", "key": "k"},
                },
            },
        ),
        ("no-source", {"name": "X", "valueFrom": {}}),
        ("secret-ref-no-key", {"name": "X", "valueFrom": {"secretKeyRef": {"name": "s"}}}),
        ("unknown-source", {"name": "X", "valueFrom": {"vaultRef": {"path": "x"}}}),
        ("name-with-equals", {"name": "A=B", "value": "1"}),
        ("name-empty", {"name": "", "value": "1"}),
        ("name-tab", {"name": "A\tB", "value": "1"}),
        ("name-unicode", {"name": "ÄPFEL", "value": "1"}),
        ("name-too-long", {"name": "N" * 257, "value": "1"}),
        ("value-too-long", {"name": "N", "value": "v" * 32769}),
        ("value-not-string", {"name": "N", "value": 3}),
        ("unknown-field", {"name": "N", "value": "1", "secret": True}),
        (
            "field-ref-deep",
            {
                "name": "N",
                "valueFrom": {"fieldRef": {"fieldPath": "x", "nested": {"a": {"b": {"c": 1}}}}},
            },
        ),
    ]:
        yield env_case("env", label, [var])
    yield env_case("env", "too-many", [{"name": f"V{i}", "value": "1"} for i in range(129)])

    # quantities and resources
    for label, requests in [
        ("word", {"cpu": "lots"}),
        ("negative", {"cpu": "-1"}),
        ("two-dots", {"memory": "1.5.5Gi"}),
        ("bad-suffix", {"memory": "16GB"}),
        ("space", {"memory": "16 Gi"}),
        ("bad-name", {"cpu!": "1"}),
        ("upper-prefix", {"Example.COM/gpu": "1"}),
        ("list", {"cpu": ["1"]}),
        ("float", {"cpu": 1.5}),
        ("gpus", {"nvidia.com/gpu": 8}),
        ("too-many", {f"example.com/r{i}": "1" for i in range(33)}),
    ]:
        yield case(
            "quantities",
            f"requests-{label}",
            "spec.resources.requests",
            requests,
            "spec.resources.requests",
            apiserver_admits=MAP_KEYS if label in ("bad-name", "upper-prefix") else "",
        )
        yield case(
            "quantities",
            f"limits-{label}",
            "spec.resources.limits",
            requests,
            "spec.resources.limits",
            apiserver_admits=MAP_KEYS if label in ("bad-name", "upper-prefix") else "",
        )
    for label, req, lim in [
        ("memory", "64Gi", "32Gi"),
        ("cpu", "16", "15500m"),
        ("exp", "2e3", "1k"),
    ]:
        r = _put(base(), "spec.resources.requests", {label if label != "exp" else "cpu": req})
        yield BadCase(
            "contradictions",
            f"limit-below-request-{label}",
            _put(r, "spec.resources.limits", {label if label != "exp" else "cpu": lim}),
            "spec.resources.limits",
        )
    for label, size in [("unit", "16GB"), ("negative", "-1Gi"), ("word", "big"), ("int", 16)]:
        yield case(
            "quantities",
            f"sharedMemory-{label}",
            "spec.resources.sharedMemory",
            size,
            "spec.resources.sharedMemory",
        )

    # node selectors, tolerations, affinity (core/v1)
    for label, sel in [
        ("bad-key", {"-bad": "x"}),
        ("key-space", {"a b": "x"}),
        ("key-two-slashes", {"a/b/c": "x"}),
        ("key-long-name", {"n" * 64: "x"}),
        ("value-space", {"pool": "a b"}),
        ("value-long", {"pool": "v" * 64}),
        ("value-int", {"pool": 1}),
        ("too-many", {f"k{i}": "v" for i in range(65)}),
    ]:
        yield case(
            "core-v1",
            f"nodeSelector-{label}",
            "spec.resources.nodeSelector",
            sel,
            "spec.resources.nodeSelector",
            apiserver_admits=MAP_KEYS if "key" in label else "",
        )
    for label, tol in [
        ("operator", {"key": "k", "operator": "Maybe"}),
        ("effect", {"key": "k", "operator": "Exists", "effect": "Sometimes"}),
        ("exists-with-value", {"key": "k", "operator": "Exists", "value": "v"}),
        ("no-key-equal", {"operator": "Equal", "value": "v"}),
        ("no-key-default", {"value": "v"}),
        ("seconds-without-noexecute", {"key": "k", "operator": "Exists", "tolerationSeconds": 30}),
        (
            "seconds-string",
            {"key": "k", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": "30"},
        ),
        ("bad-key", {"key": "a b", "operator": "Exists"}),
        ("unknown-field", {"key": "k", "operator": "Exists", "priority": 1}),
        ("not-object", "k=v:NoSchedule"),
        ("nested", {"key": {"a": {"b": 1}}, "operator": "Exists"}),
    ]:
        yield case(
            "core-v1",
            f"toleration-{label}",
            "spec.resources.tolerations",
            [tol],
            "spec.resources.tolerations",
        )
    for label, aff in [
        ("unknown-top", {"gpuAffinity": {}}),
        (
            "unknown-deep",
            {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {"key": "a", "operator": "In", "values": ["x"], "extra": 1}
                                ]
                            }
                        ]
                    }
                }
            },
        ),
        (
            "bad-operator",
            {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {"key": "a", "operator": "Near", "values": ["x"]}
                                ]
                            }
                        ]
                    }
                }
            },
        ),
        (
            "missing-required",
            {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {}}},
        ),
        (
            "terms-not-list",
            {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": "x"}
                }
            },
        ),
        (
            "weight-string",
            {
                "podAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {"weight": "1", "podAffinityTerm": {"topologyKey": "z"}}
                    ]
                }
            },
        ),
        (
            "weight-huge",
            {
                "podAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {"weight": 2**40, "podAffinityTerm": {"topologyKey": "z"}}
                    ]
                }
            },
        ),
        (
            "too-many-terms",
            {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{}] * 65
                    }
                }
            },
        ),
        ("deep-20", {"nodeAffinity": _nest(20)}),
        ("deep-500", {"podAffinity": _nest(500)}),
        ("not-object", ["x"]),
    ]:
        yield case(
            "core-v1",
            f"affinity-{label}",
            "spec.resources.affinity",
            aff,
            "spec.resources.affinity",
        )

    # contradictions
    m = base()
    yield BadCase(
        "contradictions",
        "output-is-model",
        _put(m, "spec.output.uri", m["spec"]["model"]["source"])
        if m["spec"]["model"]["source"].startswith(("s3", "pvc", "file"))
        else _put(
            _put(m, "spec.model.source", "s3://models/base"), "spec.output.uri", "s3://models/base/"
        ),
        "spec.output.uri",
    )
    yield BadCase(
        "contradictions",
        "output-is-checkpoint",
        _put(m, "spec.output.uri", m["spec"]["checkpoint"]["uri"] + "/"),
        "spec.output.uri",
    )
    yield case(
        "contradictions",
        "gpus-in-requests-cpu-job",
        "spec.resources",
        {"gpusPerNode": 0, "requests": {"nvidia.com/gpu": 1}},
        "spec.resources.requests",
    )
    yield case(
        "contradictions",
        "resume-no-step",
        "spec.checkpoint.resume",
        "pvc://ckpt/run/",
        "spec.checkpoint.resume",
    )

    # deep and huge free-form config: offline refuses, the CRD cannot look inside
    why = "a free-form object: CRD CEL cannot measure its depth or read its keys; the operator fails the job (InvalidSpec)"
    for depth in (17, 40, 100, 900):
        yield case(
            "deep",
            f"config-depth-{depth}",
            "spec.deepspeed.config",
            _nest(depth),
            "spec.deepspeed.config",
            apiserver_admits=why,
        )
    yield case(
        "deep",
        "config-too-many-keys",
        "spec.deepspeed.config",
        {f"k{i}": 1 for i in range(65)},
        "spec.deepspeed.config",
    )
    for key in ("comet.api_key", "wandb.token", "monitor.password", "secret"):
        head, _, tail = key.partition(".")
        value = {head: {tail: "abc123"}} if tail else {head: "abc123"}
        yield case(
            "secrets",
            f"config-{key}",
            "spec.deepspeed.config",
            value,
            "spec.deepspeed.config",
            apiserver_admits=why,
        )

    # unknown fields anywhere, and wrong shapes of whole sections
    for where in ("spec", "spec.model", "spec.dataset", "spec.method", "spec.training", "spec.deepspeed",
                  "spec.resources", "spec.checkpoint", "spec.output", "spec.runPolicy", "spec.queue",
                  "spec.training.performance", "spec.method.lora"):  # fmt: skip
        yield case(
            "unknown-fields",
            f"{where}.surprise",
            f"{where}.surprise",
            1,
            f"{where}.surprise" if where == "spec" else where,
        )
    for section in (
        "model",
        "dataset",
        "method",
        "training",
        "deepspeed",
        "resources",
        "checkpoint",
        "output",
        "runPolicy",
        "queue",
    ):
        yield case("type", f"whole-{section}-string", f"spec.{section}", "x", f"spec.{section}")
        yield case("type", f"whole-{section}-list", f"spec.{section}", [1, 2], f"spec.{section}")


def _nest(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


def all_cases() -> list[BadCase]:
    """Every generated case, ids unique."""
    cases = [*mutations(), *hand_written()]
    seen: dict[str, int] = {}
    out = []
    for c in cases:
        n = seen.get(c.id, 0)
        seen[c.id] = n + 1
        out.append(
            c
            if n == 0
            else BadCase(c.category, f"{c.id}#{n}", c.manifest, c.field, c.json, c.apiserver_admits)
        )
    return out


def table(stats: dict[str, Stats]) -> str:
    """The generator's table, markdown."""
    rows = [
        "| category | cases | refused | field named | crashes | accepted |",
        "|---|---|---|---|---|---|",
    ]
    total = Stats()
    for name, s in sorted(stats.items()):
        rows.append(
            f"| {name} | {s.cases} | {s.refused} | {s.named} | {s.crashes} | {len(s.accepted)} |"
        )
        total.cases += s.cases
        total.refused += s.refused
        total.named += s.named
        total.crashes += s.crashes
        total.accepted += s.accepted
    rows.append(
        f"| **all** | {total.cases} | {total.refused} | {total.named} | {total.crashes} | {len(total.accepted)} |"
    )
    return "\n".join(rows)
