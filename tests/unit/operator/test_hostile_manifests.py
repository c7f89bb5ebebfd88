"""Hostile manifests are refused fast by every command that reads one, with no traceback."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from kubetune_operator.cli import main
from tests.unit.operator.helpers import HERE

pytestmark = pytest.mark.unit

GOOD = (HERE / "lora-2node.yaml").read_text()
BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}]\n"
    for i in range(6)
)
CASES = {
    "alias bomb": (GOOD + "\n" + BOMB.replace("\n", "\n  ").join(["    x-bomb:\n  ", ""]), "alias"),
    "deep nesting": ("a: " + "[" * 5000 + "]" * 5000 + "\n", "nested deeper"),
    "deep block nesting": (
        "".join(f"{' ' * i}k{i}:\n" for i in range(900)) + " " * 900 + "v: 1\n",
        "nested deeper",
    ),
    "duplicate key": (
        GOOD.replace("spec:\n", "spec:\n  method: {type: full}\n", 1),
        "duplicate key",
    ),
}


@pytest.mark.parametrize("command", ["validate", "render", "run"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_manifest_refused_fast(
    case: str, command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text, expected = CASES[case]
    path = tmp_path / "job.yaml"
    path.write_text(text)
    start = time.process_time()  # this process's own work, not what other processes do meanwhile
    rc = main([command, str(path)])
    assert time.process_time() - start < 2
    err = capsys.readouterr().err
    assert rc != 0
    assert expected in err
    assert "Traceback" not in err


def test_validate_checks_every_document(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    second = GOOD.replace("zeroStage: 2", "zeroStage: 7")
    assert second != GOOD
    path = tmp_path / "jobs.yaml"
    path.write_text(GOOD + "\n---\n" + second)
    assert main(["validate", str(path)]) == 1
    out = capsys.readouterr()
    assert "document 1" in out.out
    assert f"error: {path}: document 2" in out.err
    assert "spec.deepspeed.zeroStage" in out.err


def test_validate_refuses_unknown_root_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(GOOD + "\nspecs: {}\n")
    assert main(["validate", str(path)]) == 1
    assert "specs" in capsys.readouterr().err
