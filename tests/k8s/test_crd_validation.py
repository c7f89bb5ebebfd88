"""The apiserver's validation of FineTuneJobs (CRD schema + CEL) against the same table the
offline validator gets in tests/unit/test_api_validation.py."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetune_operator.api import constants as c
from tests.k8s.apiserver import server_dry_run
from tests.unit.api_cases import (
    EXPONENT_YAML,
    INVALID_CASES,
    VALID_PREFERENCE,
    VALID_VARIANTS,
    InvalidCase,
    valid_manifest,
)

pytestmark = pytest.mark.k8s

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


@pytest.fixture(scope="module")
def dry_run_namespace(control_plane: Any) -> Iterator[str]:
    """One namespace for the whole table: dry runs store nothing, so tests cannot collide."""
    name = f"crd-validation-{uuid.uuid4().hex[:6]}"
    control_plane.kubectl("create", "namespace", name)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_valid_manifest_is_accepted(
    k8s_api: Any, crd_installed: str, dry_run_namespace: str
) -> None:
    assert server_dry_run(k8s_api, dry_run_namespace, valid_manifest()) is None


@pytest.mark.parametrize("manifest", VALID_PREFERENCE, ids=lambda m: str(m["spec"]["method"]))
def test_preference_settings_are_accepted(
    k8s_api: Any, crd_installed: str, dry_run_namespace: str, manifest: dict[str, Any]
) -> None:
    assert server_dry_run(k8s_api, dry_run_namespace, manifest) is None


@pytest.mark.parametrize("variant", sorted(VALID_VARIANTS))
def test_valid_variants_are_accepted(
    k8s_api: Any, crd_installed: str, dry_run_namespace: str, variant: str
) -> None:
    assert server_dry_run(k8s_api, dry_run_namespace, VALID_VARIANTS[variant]) is None


@pytest.mark.parametrize("case", INVALID_CASES, ids=lambda x: x.id)
def test_apiserver_refuses_and_names_the_field(
    k8s_api: Any, crd_installed: str, dry_run_namespace: str, case: InvalidCase
) -> None:
    message = server_dry_run(k8s_api, dry_run_namespace, case.manifest())
    assert message is not None, f"{case.id}: accepted by the apiserver"
    assert case.field in message, f"{case.id}: message does not name {case.field}: {message}"


def test_examples_exist() -> None:
    assert EXAMPLES, "examples/ holds no manifest"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_accepted_by_the_apiserver(
    control_plane: Any, crd_installed: str, dry_run_namespace: str, path: Path
) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
    kinds = (c.KIND, c.SWEEP_KIND, c.SCHEDULE_KIND)
    assert any(d.get("kind") in kinds for d in docs), f"{path.name} holds none of {kinds}"
    out = control_plane.kubectl(
        "apply",
        "--dry-run=server",
        "--validate=strict",
        "-n",
        dry_run_namespace,
        "-f",
        str(path),
        check=False,
    )
    assert out.returncode == 0, f"{path.name} refused:\n{out.stderr}"


def test_exponent_numbers_accepted_by_the_apiserver(
    control_plane: Any, crd_installed: str, dry_run_namespace: str
) -> None:
    out = control_plane.kubectl(
        "apply",
        "--dry-run=server",
        "-n",
        dry_run_namespace,
        "-o",
        "json",
        "-f",
        "-",
        input=EXPONENT_YAML,
    )
    assert json.loads(out.stdout)["spec"]["training"]["learningRate"] == pytest.approx(2e-4)
