"""The CRD generated from the pydantic models: structural, described, defaulted, and the
committed crds/ file is what the models generate now."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetune_operator.api import constants as c
from kubetune_operator.api.crd import build_crd, crd_yaml, model_schema, structural
from kubetune_operator.api.spec import FineTuneJobSpec

pytestmark = pytest.mark.unit

CRD_FILE = Path(__file__).resolve().parents[2] / "crds" / "kubetune.dev_finetunejobs.yaml"
FORBIDDEN = {"$ref", "$defs", "anyOf", "oneOf", "allOf", "title", "const"}


def root_schema() -> dict[str, Any]:
    return dict(build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def walk(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with its dotted path."""
    if not isinstance(node, dict):
        return
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


def test_committed_crd_is_not_stale() -> None:
    assert CRD_FILE.read_text() == crd_yaml(), "crds/ is stale: run `make crds` and commit it"


def test_no_json_schema_constructs_kubernetes_refuses() -> None:
    for path, node in walk(root_schema()):
        assert not FORBIDDEN & node.keys(), f"{path}: {FORBIDDEN & node.keys()}"
        assert node.get("type") != "null" and "null" not in str(node.get("type")), path
        assert node.get("default", 0) is not None, f"{path}: null default"


def test_every_node_has_one_type() -> None:
    for path, node in walk(root_schema()):
        if node.get("x-kubernetes-int-or-string"):
            continue
        assert node.get("type") in {"object", "array", "string", "integer", "number", "boolean"}, (
            path
        )


def test_every_spec_and_status_property_is_described() -> None:
    schema = root_schema()
    for top in ("spec", "status"):
        for path, node in walk(schema["properties"][top], top):
            if path.endswith("[]") or path.endswith("{}"):
                continue
            assert node.get("description"), f"{path} has no description (kubectl explain shows it)"


def test_defaults_enums_and_ranges_carried_over() -> None:
    spec = root_schema()["properties"]["spec"]["properties"]
    zero = spec["deepspeed"]["properties"]["zeroStage"]
    assert (zero["default"], zero["minimum"], zero["maximum"]) == (2, 0, 3)
    assert spec["method"]["properties"]["type"]["enum"] == ["full", "partial", "lora", "qlora"]
    assert spec["method"]["required"] == ["type"]
    lr = spec["training"]["properties"]["learningRate"]
    assert lr["minimum"] == 0 and lr["exclusiveMinimum"] is True
    assert spec["training"]["default"] == {} and spec["runPolicy"]["default"] == {}
    assert spec["dataset"]["properties"]["validation"].get("default") is None


def test_cel_rules_present_with_field_paths() -> None:
    spec = root_schema()["properties"]["spec"]
    rules = spec["x-kubernetes-validations"]
    assert any("globalBatchSize" in r["rule"] for r in rules)
    assert any("oldSelf.runPolicy" in r["rule"] for r in rules)
    assert all(r.get("fieldPath", ".x").startswith(".") for r in rules)


def test_optional_ref_becomes_its_target() -> None:
    defs = {
        "Inner": {
            "type": "object",
            "description": "inner",
            "properties": {"a": {"type": "integer"}},
        }
    }
    node = {
        "anyOf": [{"$ref": "#/$defs/Inner"}, {"type": "null"}],
        "default": None,
        "description": "outer",
    }
    assert structural(node, defs) == {
        "type": "object",
        "description": "outer",
        "properties": {"a": {"type": "integer"}},
    }


def test_exclusive_bounds_use_openapi_v3_booleans() -> None:
    assert structural({"type": "number", "exclusiveMinimum": 0}, {}) == {
        "type": "number",
        "minimum": 0,
        "exclusiveMinimum": True,
    }


def test_preserve_unknown_fields_kept_and_pruned_of_extras() -> None:
    config = root_schema()["properties"]["spec"]["properties"]["deepspeed"]["properties"]["config"]
    assert config["x-kubernetes-preserve-unknown-fields"] is True and config["type"] == "object"
    assert "additionalProperties" not in config


def test_names_status_subresource_and_columns() -> None:
    crd = build_crd()
    assert crd["metadata"]["name"] == c.CRD_NAME
    assert crd["spec"]["names"]["shortNames"] == ["ftj"]
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    names = [col["name"] for col in version["additionalPrinterColumns"] if not col.get("priority")]
    assert names == ["Phase", "Progress", "Loss", "ETA", "Restarts", "Age"]


def test_spec_schema_matches_model_fields() -> None:
    props = model_schema(FineTuneJobSpec)["properties"]
    aliases = {f.alias or n for n, f in FineTuneJobSpec.model_fields.items()}
    assert set(props) == aliases


def test_crd_yaml_round_trips() -> None:
    assert yaml.safe_load(crd_yaml()) == build_crd()
