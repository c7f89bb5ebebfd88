"""The rules table (api/guards.py): each rule reaches the CRD at its node, each cross-field rule
has a row in the shared table of invalid manifests (so the apiserver test runs it too), and the
immutability rules cover every spec field but runPolicy.suspend."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from kubetune_operator.api import guards
from kubetune_operator.api.crd import build_crd
from kubetune_operator.api.spec import FineTuneJob, FineTuneJobSpec, RunPolicySpec
from tests.unit.api_cases import INVALID_CASES

pytestmark = pytest.mark.unit

ALL = [*guards.GUARDS, *guards.immutability(FineTuneJobSpec)]


def node_at(at: str) -> dict[str, Any]:
    """The CRD schema node a rule at `at` (relative to spec, [] into list items) sits on."""
    node = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    for step in at.split(".") if at else []:
        node = node["properties"][step.removesuffix("[]")]
        if step.endswith("[]"):
            node = node["items"]
    return dict(node)


def offline_error(manifest: dict[str, Any]) -> str:
    """The error offline validation gives ("" when it accepts the manifest)."""
    try:
        FineTuneJob.model_validate(manifest)
    except ValidationError as err:
        return str(err)
    return ""


@pytest.mark.parametrize("rule", ALL, ids=lambda r: r.summary[:60])
def test_each_rule_sits_in_the_crd_at_its_node(rule: guards.Guard) -> None:
    assert rule.rule() in node_at(rule.at)["x-kubernetes-validations"]


@pytest.mark.parametrize("rule", guards.CROSS_FIELD, ids=lambda r: r.summary[:60])
def test_each_cross_field_rule_is_in_the_table_both_validators_run(rule: guards.Guard) -> None:
    hits = [c.id for c in INVALID_CASES if rule.summary in offline_error(c.manifest())]
    assert hits, f"no case in tests/unit/api_cases.py breaks this rule: {rule.summary}"


def test_every_spec_field_but_suspend_is_immutable() -> None:
    rules = guards.immutability(FineTuneJobSpec)
    assert all(r.check is None for r in rules)  # transition rules: CEL only
    spec_fields = {f.alias or n for n, f in FineTuneJobSpec.model_fields.items()}
    assert {r.field for r in rules} == {f".{f}" for f in spec_fields}
    run_policy = next(r for r in rules if r.field == ".runPolicy")
    for name, f in RunPolicySpec.model_fields.items():
        alias = f.alias or name
        assert (f"self.runPolicy.{alias} ==" in run_policy.cel) == (alias != "suspend"), alias
