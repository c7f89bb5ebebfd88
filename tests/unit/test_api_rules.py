"""The cross-field rules table (api/rules.py): each rule reaches the CRD at its scope, each has a
row in the shared table of invalid manifests (so the apiserver test runs it too), and the
immutability rules cover every spec field but runPolicy.suspend."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from kubetune_operator.api.crd import build_crd
from kubetune_operator.api.rules import RULES, immutability_rules
from kubetune_operator.api.spec import FineTuneJob, FineTuneJobSpec, RunPolicySpec
from tests.unit.api_cases import INVALID_CASES

pytestmark = pytest.mark.unit


def node_at(scope: str) -> dict[str, Any]:
    """The CRD schema node of a dotted scope such as spec.training."""
    node = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for part in scope.split("."):
        node = node["properties"][part]
    return dict(node)


def offline_error(manifest: dict[str, Any]) -> str:
    """The error offline validation gives ("" when it accepts the manifest)."""
    try:
        FineTuneJob.model_validate(manifest)
    except ValidationError as err:
        return str(err)
    return ""


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.message[:60])
def test_each_rule_sits_in_the_crd_at_its_scope(rule: Any) -> None:
    assert rule.crd_entry() in node_at(rule.scope)["x-kubernetes-validations"]


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.message[:60])
def test_each_rule_is_in_the_table_both_validators_run(rule: Any) -> None:
    hits = [c.id for c in INVALID_CASES if rule.message in offline_error(c.manifest())]
    assert hits, f"no case in tests/unit/api_cases.py breaks this rule: {rule.message}"


def test_every_spec_field_but_suspend_is_immutable() -> None:
    fields = {r.field for r in immutability_rules(FineTuneJobSpec)}
    spec_fields = {f.alias or n for n, f in FineTuneJobSpec.model_fields.items()}
    assert fields == {f".{f}" for f in spec_fields}
    run_policy = next(r for r in immutability_rules(FineTuneJobSpec) if r.field == ".runPolicy")
    for name, f in RunPolicySpec.model_fields.items():
        alias = f.alias or name
        assert (f"self.runPolicy.{alias} ==" in run_policy.cel) == (alias != "suspend"), alias
