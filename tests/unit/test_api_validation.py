"""Offline validation (pydantic models and `kubetune validate`) against the shared table that
the apiserver also gets (tests/k8s/test_crd_validation.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from kubetune_operator.api.manifests import load_documents
from kubetune_operator.api.spec import FineTuneJob
from kubetune_operator.cli import format_validation_error, main
from tests.unit.api_cases import (
    EXPONENT_YAML,
    INVALID_CASES,
    VALID_PREFERENCE,
    VALID_VARIANTS,
    InvalidCase,
    valid_manifest,
)

pytestmark = pytest.mark.unit

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


def offline_errors(manifest: dict[str, object]) -> str | None:
    """The field-named error lines `kubetune validate` prints, or None when valid."""
    try:
        FineTuneJob.model_validate(manifest)
    except ValidationError as err:
        return format_validation_error(err)
    return None


def test_valid_manifest_is_accepted() -> None:
    assert offline_errors(valid_manifest()) is None


@pytest.mark.parametrize("manifest", VALID_PREFERENCE, ids=lambda m: str(m["spec"]["method"]))
def test_preference_settings_are_accepted(manifest: dict[str, object]) -> None:
    assert offline_errors(manifest) is None


@pytest.mark.parametrize("variant", sorted(VALID_VARIANTS))
def test_valid_variants_are_accepted(variant: str) -> None:
    assert offline_errors(VALID_VARIANTS[variant]) is None


def test_table_is_large_enough() -> None:
    assert len(INVALID_CASES) >= 25
    assert len({c.id for c in INVALID_CASES}) == len(INVALID_CASES), "duplicate case ids"


@pytest.mark.parametrize("case", INVALID_CASES, ids=lambda c: c.id)
def test_models_refuse_and_name_the_field(case: InvalidCase) -> None:
    errors = offline_errors(case.manifest())
    assert errors is not None, f"{case.id}: accepted offline"
    assert case.field in errors, f"{case.id}: error does not name {case.field}:\n{errors}"


@pytest.mark.parametrize("case", INVALID_CASES, ids=lambda c: c.id)
def test_validate_command_refuses_and_names_the_field(
    case: InvalidCase, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / f"{case.id}.yaml"
    path.write_text(yaml.safe_dump(case.manifest()))
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert case.field in err and str(path) in err


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_validate_offline(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(path)]) == 0, capsys.readouterr().err


def test_examples_exist() -> None:
    assert EXAMPLES, "examples/ holds no manifest"


def test_console_script_validates(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(yaml.safe_dump(valid_manifest()))
    bad.write_text(yaml.safe_dump(INVALID_CASES[0].manifest()))
    cmd = [sys.executable, "-m", "kubetune_operator.cli", "validate"]
    ok = subprocess.run([*cmd, str(good)], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "is valid" in ok.stdout
    no = subprocess.run([*cmd, str(bad)], capture_output=True, text=True, timeout=60)
    assert no.returncode == 1 and INVALID_CASES[0].field in no.stderr


def test_exponent_numbers_read_like_kubectl(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(EXPONENT_YAML)
    assert main(["validate", str(path)]) == 0, capsys.readouterr().err
    job = FineTuneJob.model_validate(load_documents(EXPONENT_YAML)[0])
    assert job.spec.training.learning_rate == pytest.approx(2e-4)
    assert job.spec.training.weight_decay == pytest.approx(1e-2)


def test_quoted_numbers_stay_strings() -> None:
    assert load_documents('a: "2e-4"\nb: 2e-4\nc: 7\n') == [{"a": "2e-4", "b": 2e-4, "c": 7}]
