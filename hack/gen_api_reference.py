#!/usr/bin/env python3
"""Generate the API reference pages in docs/ from the CRD schemas in crds/: FineTuneJob
(docs/api-reference.md), FineTuneSweep and FineTuneSchedule (their templates link to the
FineTuneJob page instead of repeating it).

The CRDs are themselves generated from the API models, so the reference shows exactly what the
apiserver enforces: types, defaults, enums, ranges, patterns and the CEL rules with their
messages. Run `python hack/gen_api_reference.py` to rewrite the files, `--check` to fail when
one is stale (a unit test does the same).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
CRD = REPO / "crds" / "kubetune.dev_finetunejobs.yaml"
OUT = REPO / "docs" / "api-reference.md"
# (CRD file, page) of every kind.
PAGES = [
    (CRD, OUT),
    (REPO / "crds" / "kubetune.dev_finetunesweeps.yaml", REPO / "docs" / "api-reference-sweep.md"),
    (
        REPO / "crds" / "kubetune.dev_finetuneschedules.yaml",
        REPO / "docs" / "api-reference-schedule.md",
    ),
]
# Objects documented on another page: a template's spec is a FineTuneJob spec.
ELSEWHERE = {"spec.template.spec": "api-reference.md#spec"}


def load_crd(path: Path = CRD) -> dict[str, Any]:
    """The CustomResourceDefinition document."""
    return dict(yaml.safe_load(path.read_text()))


def type_name(node: dict[str, Any]) -> str:
    """A short type for the table: string, integer, []string, map[string]string, object ..."""
    if node.get("x-kubernetes-int-or-string"):
        return "int or string"
    kind = node.get("type", "any")
    if kind == "array":
        return "[]" + type_name(node.get("items", {}))
    if kind == "object" and "properties" not in node:
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            return "map[string]" + type_name(extra)
        return (
            "object (free-form)" if node.get("x-kubernetes-preserve-unknown-fields") else "object"
        )
    return str(kind)


def constraints(node: dict[str, Any]) -> list[str]:
    """Validation the schema states for one field, in words."""
    out = []
    if "enum" in node:
        out.append("one of " + ", ".join(f"`{v}`" for v in node["enum"]))
    if "minimum" in node:
        out.append(f"{'>' if node.get('exclusiveMinimum') else '>='} {node['minimum']}")
    if "maximum" in node:
        out.append(f"{'<' if node.get('exclusiveMaximum') else '<='} {node['maximum']}")
    for key, word in (
        ("minLength", "min length"),
        ("maxLength", "max length"),
        ("minItems", "min items"),
        ("maxItems", "max items"),
        ("maxProperties", "max entries"),
    ):
        if key in node:
            out.append(f"{word} {node[key]}")
    if "pattern" in node:
        out.append(f"pattern `{node['pattern']}`")
    return out


def cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|")


def flow(value: Any) -> str:
    """A default value the way it would be written in a manifest."""
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def field_row(name: str, node: dict[str, Any], required: bool, anchor: str | None) -> str:
    """One table row for a field."""
    shown = f"[`{name}`](#{anchor})" if anchor else f"`{name}`"
    default = f"`{flow(node['default'])}`" if "default" in node else ""
    notes = "; ".join(constraints(node))
    desc = cell(node.get("description", ""))
    if notes:
        desc = f"{desc} ({cell(notes)})" if desc else cell(notes)
    return (
        f"| {shown} | {cell(type_name(node))} | {'yes' if required else ''} | {default} | {desc} |"
    )


def object_of(node: dict[str, Any]) -> dict[str, Any] | None:
    """The object schema a field holds (itself, or its array items), if it has properties."""
    if "properties" in node:
        return node
    items = node.get("items", {})
    return items if "properties" in items else None


def rule_line(rule: dict[str, str]) -> str:
    """A CEL rule as a bullet: its message, and the expression when it is short enough to read."""
    expr = rule["rule"]
    shown = f" (`{cell(expr)}`)" if len(expr) <= 160 else ""
    return f"- {cell(rule['message'])}{shown}"


def render_object(path: str, node: dict[str, Any], out: list[str]) -> None:
    """A section for one object type, then sections for its nested object types."""
    out += [f"## {path}", ""]
    if node.get("description"):
        out += [cell(node["description"]), ""]
    out += ["| Field | Type | Required | Default | Description |", "|---|---|---|---|---|"]
    required = set(node.get("required", []))
    nested = []
    for name, sub in node["properties"].items():
        child = object_of(sub)
        link = ELSEWHERE.get(f"{path}.{name}")
        anchor = anchor_of(f"{path}.{name}") if child else None
        if link:
            sub = {
                **sub,
                "description": f"{sub.get('description', '')} See [FineTuneJob spec]({link}).",
            }
            child, anchor = None, None
        out.append(field_row(name, sub, name in required, anchor))
        if child:
            nested.append((f"{path}.{name}", child))
    rules = node.get("x-kubernetes-validations", [])
    if rules:
        out += ["", "Rules checked by the apiserver:", ""]
        out += [rule_line(r) for r in rules]
    out.append("")
    for sub_path, child in nested:
        render_object(sub_path, child, out)


def anchor_of(heading: str) -> str:
    """The anchor GitHub makes for a `## heading`."""
    return "".join(ch for ch in heading.lower() if ch.isalnum() or ch in "-_ ").replace(" ", "-")


def render(crd: dict[str, Any]) -> str:
    """The whole reference page."""
    spec = crd["spec"]
    version = next(v for v in spec["versions"] if v.get("storage"))
    root = version["schema"]["openAPIV3Schema"]
    out = [
        "<!-- Generated by hack/gen_api_reference.py from crds/. Do not edit. -->",
        f"# API reference: {spec['names']['kind']} ({spec['group']}/{version['name']})",
        "",
        cell(root.get("description", "")),
        "",
        f"Short name: `{', '.join(spec['names'].get('shortNames', []))}`; scope: {spec['scope']}; "
        f"categories: {', '.join(spec['names'].get('categories', []))}.",
        "",
        f"`kubectl get {spec['names']['shortNames'][0]}` columns: "
        + ", ".join(
            c["name"] for c in version.get("additionalPrinterColumns", []) if not c.get("priority")
        )
        + " (`-o wide` adds "
        + ", ".join(
            c["name"] for c in version.get("additionalPrinterColumns", []) if c.get("priority")
        )
        + ").",
        "",
    ]
    root_rules = root.get("x-kubernetes-validations", [])
    if root_rules:
        out += ["Rules on the whole object:", ""]
        out += [rule_line(r) for r in root_rules]
        out.append("")
    for part in ("spec", "status"):
        if part in root["properties"]:
            render_object(part, root["properties"][part], out)
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="fail when docs/api-reference.md is stale"
    )
    args = parser.parse_args(argv)
    stale = 0
    for crd, page in PAGES:
        text = render(load_crd(crd))
        if not args.check:
            page.write_text(text)
        elif not page.exists() or page.read_text() != text:
            print(
                f"{page.relative_to(REPO)} is stale: run python hack/gen_api_reference.py",
                file=sys.stderr,
            )
            stale = 1
    return stale


if __name__ == "__main__":
    sys.exit(main())
