"""`kubetune render` and `kubetune validate` on manifest files."""

from __future__ import annotations

import json
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


@pytest.mark.parametrize(
    ("where", "said"),
    [
        ("ck", "is not a checkpoint URI: it ends in step-NNNNNNNN"),
        ("ck/step-00000010", "is not a committed checkpoint: no manifest"),
        ("ck/step-00000020", "is not a committed checkpoint: nothing there"),
        ("ck/step-00000030", "not signed with this namespace's checkpoint key"),
    ],
)
def test_export_refuses_what_is_not_a_committed_checkpoint(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    where: str,
    said: str,
) -> None:
    monkeypatch.setenv("KUBETUNE_CHECKPOINT_KEY", "the namespace key")
    (tmp_path / "ck" / "step-00000010").mkdir(parents=True)  # upload cut: no manifest
    (tmp_path / "ck" / "step-00000010" / "mp_rank_00_model_states.pt").write_bytes(b"x")
    forged = tmp_path / "ck" / "step-00000030"  # written by someone without the key
    forged.mkdir()
    (forged / "mp_rank_00_model_states.pt").write_bytes(b"x")
    (forged / "manifest.json").write_text(json.dumps({
        "tag": "step-00000030", "step": 30, "job": "ns/j", "signature": "0" * 64,
        "files": {"mp_rank_00_model_states.pt": {"size": 1, "sha256": "0" * 64}},
    }))  # fmt: skip
    uri = f"file://{tmp_path}/{where}"
    assert main(["export", uri, str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert said in err and uri in err
    assert not (tmp_path / "out").exists()


def test_export_without_the_checkpoint_key_says_where_to_get_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBETUNE_CHECKPOINT_KEY", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # no `kubetune run` key
    assert main(["export", f"file://{tmp_path}/ck/step-00000010", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "KUBETUNE_CHECKPOINT_KEY" in err and "kubetune-checkpoint-key" in err


def test_validate_checks_every_job_of_a_multi_document_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A broken second FineTuneJob fails the file, named by its document and field."""
    good = yaml.safe_load((HERE / "lora-2node.yaml").read_text())
    bad = yaml.safe_load((HERE / "lora-2node.yaml").read_text())
    bad["metadata"]["name"] = "second"
    bad["spec"]["deepspeed"]["zeroStage"] = 7
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "c"}}
    path = tmp_path / "jobs.yaml"
    path.write_text(yaml.safe_dump_all([good, claim, bad]))
    assert main(["validate", str(path)]) == 1
    out, err = capsys.readouterr()
    assert f"{path}: document 1 (llama-lora): FineTuneJob llama-lora is valid" in out
    assert f"{path}: document 3 (second)" in err and "spec.deepspeed.zeroStage" in err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from kubetune_operator import __version__

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"kubetune {__version__}"


@pytest.mark.parametrize("command", ["run", "validate"])
def test_help_describes_the_command_with_an_example(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    description = text.split("\n\n")[1]
    assert len(description.split()) > 15, text
    assert f"examples:\n  kubetune {command} examples/" in text or (
        f"\n  kubetune {command} examples/" in text
    ), text


def test_render_image_keeps_the_other_operator_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--image replaces the image only: the grace period and pull policy the operator is
    configured with (its environment, as the chart sets it) stay."""
    monkeypatch.setenv("KUBETUNE_GRACE_SECONDS", "900")
    monkeypatch.setenv("KUBETUNE_TRAINER_IMAGE_PULL_POLICY", "Always")
    assert main(["render", str(HERE / "lora-2node.yaml"), "--image", "img:2"]) == 0
    pod = next(d for d in yaml.safe_load_all(capsys.readouterr().out) if d["kind"] == "Pod")
    assert pod["spec"]["terminationGracePeriodSeconds"] == 900
    container = pod["spec"]["containers"][0]
    assert (container["image"], container["imagePullPolicy"]) == ("img:2", "Always")
