"""docs/queueing.md shows the platform objects the tests apply, and every chart value it has."""

from __future__ import annotations

import re
import textwrap

import pytest
import yaml

from harness.binaries import REPO_ROOT

pytestmark = pytest.mark.unit

DOC = REPO_ROOT / "docs" / "queueing.md"
EXAMPLE = REPO_ROOT / "examples" / "kueue" / "gpu-queue.yaml"


def yaml_block(text: str, first_line: str) -> str:
    """The fenced yaml block whose first line is `first_line`, dedented."""
    for block in re.findall(r"```yaml\n(.*?)```", text, re.S):
        body = textwrap.dedent(block)
        if body.startswith(first_line):
            return body
    raise AssertionError(f"no yaml block starting with {first_line!r} in {DOC.name}")


def test_the_platform_objects_in_the_doc_are_the_ones_the_tests_apply() -> None:
    shown = yaml_block(DOC.read_text(), "# examples/kueue/gpu-queue.yaml")
    assert list(yaml.safe_load_all(shown)) == list(yaml.safe_load_all(EXAMPLE.read_text()))


def test_the_doc_names_every_queueing_value_of_the_chart() -> None:
    values = yaml.safe_load((REPO_ROOT / "charts" / "kubetune" / "values.yaml").read_text())
    text = DOC.read_text()
    missing = [k for k in values["queueing"] if f"queueing.{k}" not in text]
    assert not missing, f"chart values not in {DOC.name}: {missing}"
