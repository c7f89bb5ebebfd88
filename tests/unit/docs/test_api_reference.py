"""docs/api-reference.md is generated from the CRD and must be current."""

from __future__ import annotations

import importlib.util
from types import ModuleType

import pytest

from harness.binaries import REPO_ROOT

pytestmark = pytest.mark.unit


def load_generator() -> ModuleType:
    """hack/gen_api_reference.py as a module (hack/ is not a package)."""
    spec = importlib.util.spec_from_file_location(
        "gen_api_reference", REPO_ROOT / "hack" / "gen_api_reference.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_api_reference_is_current() -> None:
    gen = load_generator()
    assert gen.main(["--check"]) == 0, (
        "docs/api-reference.md is stale: run python hack/gen_api_reference.py"
    )


def test_reference_lists_every_spec_field_with_its_constraints() -> None:
    gen = load_generator()
    crd = gen.load_crd()
    text = gen.render(crd)
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    for name in spec["properties"]:
        assert f"[`{name}`](#spec{name.lower()})" in text
    assert "| `nodes` | integer |  | `1` |" in text and ">= 1; <= 1024" in text
    assert "spec.method.type qlora needs GPUs" in text


def test_check_fails_when_the_page_differs(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    gen = load_generator()
    stale = tmp_path / "api-reference.md"
    stale.write_text("old\n")
    monkeypatch.setattr(gen, "PAGES", [(gen.CRD, stale), *gen.PAGES[1:]])
    monkeypatch.setattr(gen, "REPO", tmp_path.parent)
    assert gen.main(["--check"]) == 1


def test_sweep_and_schedule_pages_link_the_job_spec_instead_of_repeating_it() -> None:
    gen = load_generator()
    for crd, _ in gen.PAGES[1:]:
        text = gen.render(gen.load_crd(crd))
        assert "See [FineTuneJob spec](api-reference.md#spec)" in text
        assert "## spec.template.spec.model" not in text
