"""`kubetune render` and `kubetune validate` on manifest files."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kubetune_operator.cli import main
from tests.unit.operator.helpers import HERE

pytestmark = pytest.mark.unit
REPO = HERE.parents[2]


def test_render_prints_every_child(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["render", str(HERE / "lora-2node.yaml"), "--attempt", "2", "--image", "img:1"]) == 0
    )
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    kinds = [d["kind"] for d in docs]
    assert kinds == ["ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Service", "Pod", "Pod"]
    assert docs[-1]["metadata"]["name"] == "llama-lora-a2-1"
    assert docs[-1]["spec"]["containers"][0]["image"] == "img:1"


def test_render_quickstart_example(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Its relative file:// paths are for `kubetune run`; a cluster needs absolute ones."""
    text = (REPO / "examples" / "quickstart.yaml").read_text()
    assert main(["render", str(REPO / "examples" / "quickstart.yaml")]) == 1
    err = capsys.readouterr().err
    assert "spec.model.source: file://runs/quickstart/base is a relative path" in err
    absolute = tmp_path / "quickstart.yaml"
    absolute.write_text(text.replace("file://runs/", "file:///srv/runs/"))
    assert main(["render", str(absolute)]) == 0
    pods = [d for d in yaml.safe_load_all(capsys.readouterr().out) if d["kind"] == "Pod"]
    assert len(pods) == 2
    assert "nvidia.com/gpu" not in str(pods[0]["spec"]["containers"][0]["resources"])


def test_render_bad_manifest_names_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = yaml.safe_load((HERE / "lora-2node.yaml").read_text())
    doc["spec"]["deepspeed"]["zeroStage"] = 7
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    assert main(["render", str(bad)]) == 1
    assert "spec.deepspeed.zeroStage" in capsys.readouterr().err


def test_validate_quickstart(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(REPO / "examples" / "quickstart.yaml")]) == 0
    assert "quickstart is valid" in capsys.readouterr().out
