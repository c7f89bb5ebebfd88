"""Offline validation of FineTuneSweep and FineTuneSchedule manifests (the models behind
`kubetune validate`) against the table the apiserver also gets (tests/k8s/test_lifecycle_crds.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from kubetune_operator.api.schedule import FineTuneSchedule
from kubetune_operator.api.sweep import FineTuneSweep
from kubetune_operator.cli import format_validation_error, load_policy, main, validate_documents
from tests.unit.lifecycle_cases import INVALID_CASES, Case, valid_schedule, valid_sweep

pytestmark = pytest.mark.unit


def offline_errors(manifest: dict[str, Any]) -> str | None:
    model = FineTuneSweep if manifest["kind"] == "FineTuneSweep" else FineTuneSchedule
    try:
        model.model_validate(manifest)
    except ValidationError as err:
        return format_validation_error(err)
    return None


def test_valid_manifests_are_accepted() -> None:
    assert offline_errors(valid_sweep()) is None
    assert offline_errors(valid_schedule()) is None


def test_case_ids_are_unique() -> None:
    assert len({c.id for c in INVALID_CASES}) == len(INVALID_CASES)


@pytest.mark.parametrize("case", INVALID_CASES, ids=lambda c: c.id)
def test_models_refuse_and_name_the_field(case: Case) -> None:
    errors = offline_errors(case.manifest())
    assert errors is not None, f"{case.id}: accepted offline"
    assert case.field in errors, f"{case.id}: error does not name {case.field}:\n{errors}"


@pytest.mark.parametrize("plural", ["finetunesweeps", "finetuneschedules"])
def test_committed_crds_are_current(plural: str) -> None:
    from harness.binaries import REPO_ROOT
    from kubetune_operator.api.crd import crd_yaml

    committed = (REPO_ROOT / "crds" / f"kubetune.dev_{plural}.yaml").read_text()
    assert committed == crd_yaml(plural), "crds/ is stale: run `make crds` and commit it"


def test_validate_checks_every_trial_the_sweep_would_make(tmp_path: Path) -> None:
    """A grid value valid for its field can still make an invalid job with the template (a
    global batch below the micro batch): `kubetune validate` names the trial's problem."""
    import yaml

    sweep = valid_sweep("batches")
    sweep["spec"]["template"]["spec"]["training"]["microBatchSize"] = 4
    sweep["spec"]["parameters"] = [{"path": "training.globalBatchSize", "values": [8, 2]}]
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    ok, errors = validate_documents(str(path))
    assert ok == [] and len(errors) == 1, errors
    assert "parameters {'training.globalBatchSize': 2}" in errors[0]
    assert "globalBatchSize must be at least microBatchSize" in errors[0]


def test_render_prints_the_jobs_a_sweep_and_a_schedule_make(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(valid_sweep("grid")))
    assert main(["render", str(path)]) == 0
    jobs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [j["metadata"]["name"] for j in jobs] == ["grid-t0", "grid-t1", "grid-t2", "grid-t3"]
    assert [j["spec"]["method"]["lora"]["r"] for j in jobs] == [4, 16, 4, 16]
    path.write_text(yaml.safe_dump(valid_schedule("nightly")))
    assert main(["render", str(path)]) == 0
    [run] = list(yaml.safe_load_all(capsys.readouterr().out))
    assert run["metadata"]["name"] == "nightly-r1"
    assert run["spec"]["benchmark"]["uri"] == "s3://data/bench.jsonl"
    bad = valid_schedule("bad")
    bad["spec"]["schedule"] = "0 25 * * *"
    path.write_text(yaml.safe_dump(bad))
    assert main(["validate", str(path)]) == 1
    assert "spec.schedule: hour 25 is outside 0-23" in capsys.readouterr().err


def test_validate_with_a_policy_checks_every_job_a_sweep_makes(tmp_path: Path) -> None:
    """A trial whose swept image the platform does not allow is refused, by trial name."""
    import yaml

    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump({"allowedImages": ["registry.example/kubetune/*"]}))
    sweep = valid_sweep("imgs")
    sweep["spec"]["template"]["spec"]["resources"]["image"] = "registry.example/kubetune/t:1"
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    ok, errors = validate_documents(str(path), load_policy(str(policy)))
    assert errors == [] and ok, ok
    sweep["spec"]["template"]["spec"]["resources"]["image"] = "elsewhere.example/t:1"
    path.write_text(yaml.safe_dump(sweep))
    ok, errors = validate_documents(str(path), load_policy(str(policy)))
    assert ok == [] and len(errors) == 4, errors
    assert all("spec.resources.image" in e for e in errors)
    assert [e.split(": ")[3] for e in errors] == [f"imgs-t{i}" for i in range(4)], errors
