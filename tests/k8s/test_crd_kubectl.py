"""What users see through kubectl: explain texts, printer columns, status subresource."""

from __future__ import annotations

import json
from typing import Any

import pytest

from harness import ControlPlane
from tests.unit.api_cases import valid_manifest

pytestmark = pytest.mark.k8s

STATUS = {
    "status": {
        "phase": "Running",
        "restarts": 1,
        "progress": {
            "step": 50,
            "totalSteps": 100,
            "percent": 50,
            "summary": "50/100 (50%)",
            "loss": 1.25,
            "evalLoss": 1.5,
            "eta": "1h2m",
        },
    }
}


def test_explain_deepspeed_shows_descriptions(
    control_plane: ControlPlane, crd_installed: str
) -> None:
    out = control_plane.kubectl("explain", "finetunejob.spec.deepspeed").stdout
    assert "DeepSpeed ZeRO settings" in out
    assert "zeroStage" in out and "shards optimizer states" in out
    assert "offload" in out and "Offload optimizer states or parameters" in out
    nested = control_plane.kubectl("explain", "ftj.spec.deepspeed.offload.parameters").stdout
    assert "ZeRO stage 3 only" in nested


def test_printer_columns_show_status(
    control_plane: ControlPlane, crd_installed: str, namespace: str
) -> None:
    control_plane.kubectl(
        "create", "-n", namespace, "-f", "-", input=json.dumps(valid_manifest("cols"))
    )
    control_plane.kubectl(
        "patch",
        "ftj",
        "cols",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(STATUS),
    )
    header, row = control_plane.kubectl("get", "ftj", "cols", "-n", namespace).stdout.splitlines()
    assert header.split() == ["NAME", "PHASE", "PROGRESS", "LOSS", "ETA", "RESTARTS", "AGE"]
    assert row.startswith("cols") and "Running" in row
    assert "50/100 (50%)" in row and "1.25" in row and "1h2m" in row
    wide_header, wide_row = control_plane.kubectl(
        "get", "ftj", "cols", "-n", namespace, "-o", "wide"
    ).stdout.splitlines()
    assert wide_header.split()[-7:] == [
        "METHOD", "WORKERS", "STEP", "EVAL-LOSS", "OBJECTIVE", "PREF-ACC", "MARGIN",
    ]  # fmt: skip
    assert wide_row.split()[-5:] == ["lora", "1", "50", "1.5", "sft"]  # no preference: blank


def test_printer_columns_show_preference_accuracy_of_a_dpo_job(
    control_plane: ControlPlane, crd_installed: str, namespace: str
) -> None:
    manifest = valid_manifest("dpo-cols")
    manifest["spec"]["method"]["objective"] = "dpo"
    manifest["spec"]["dataset"]["format"] = "preference"
    control_plane.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(manifest))
    preference = {"reference": "adapter-disabled", "evalAccuracy": 0.9375, "evalRewardMargin": 2.5}
    status = {"status": {**STATUS["status"], "progress": {**STATUS["status"]["progress"],
                                                          "preference": preference}}}  # fmt: skip
    control_plane.kubectl(
        "patch", "ftj", "dpo-cols", "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps(status),
    )  # fmt: skip
    header, row = control_plane.kubectl(
        "get", "ftj", "dpo-cols", "-n", namespace, "-o", "wide"
    ).stdout.splitlines()
    assert header.split()[-3:] == ["OBJECTIVE", "PREF-ACC", "MARGIN"]
    assert row.split()[-3:] == ["dpo", "0.9375", "2.5"]


def test_status_is_a_subresource_and_is_validated(
    control_plane: ControlPlane, crd_installed: str, namespace: str
) -> None:
    control_plane.kubectl(
        "create", "-n", namespace, "-f", "-", input=json.dumps(valid_manifest("st"))
    )
    # A plain update ignores status: only the status subresource writes it.
    control_plane.kubectl(
        "patch", "ftj", "st", "-n", namespace, "--type=merge", "-p", json.dumps(STATUS)
    )
    got: dict[str, Any] = json.loads(
        control_plane.kubectl("get", "ftj", "st", "-n", namespace, "-o", "json").stdout
    )
    assert "status" not in got or "phase" not in got["status"]
    bad = {"status": {"phase": "Exploded"}}
    out = control_plane.kubectl(
        "patch",
        "ftj",
        "st",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(bad),
        check=False,
    )
    assert out.returncode != 0 and "status.phase" in out.stderr


def test_categories_list_jobs(
    control_plane: ControlPlane, crd_installed: str, namespace: str
) -> None:
    control_plane.kubectl(
        "create", "-n", namespace, "-f", "-", input=json.dumps(valid_manifest("cat"))
    )
    assert (
        "finetunejob.kubetune.dev/cat"
        in control_plane.kubectl("get", "kubetune", "-n", namespace, "-o", "name").stdout
    )
