"""The Dockerfiles are pinned, run as non-root, and install what was tested."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

import pytest

from harness.binaries import REPO_ROOT

pytestmark = pytest.mark.unit

DOCKERFILES = {
    "operator": REPO_ROOT / "operator" / "Dockerfile",
    "trainer": REPO_ROOT / "trainer" / "Dockerfile",
}
CONSTRAINTS = {
    "operator": REPO_ROOT / "operator" / "constraints.txt",
    "trainer": REPO_ROOT / "trainer" / "constraints.txt",
}


def base_images(text: str) -> list[str]:
    """Every base image, with ARG defaults substituted into FROM lines."""
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", text, re.M))
    images = []
    for ref in re.findall(r"^FROM (\S+)", text, re.M):
        ref = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), ref)
        images.append(ref)
    return [i for i in images if i not in ("build",)]


def pins(path: Path) -> dict[str, str]:
    """name -> version from a constraints file (lower-cased names)."""
    out = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)$", line.strip())
        if m:
            out[m.group(1).lower().replace("_", "-")] = m.group(2)
    return out


def requirement_names(reqs: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[ ;]", r, maxsplit=1)[0].lower().replace("_", "-") for r in reqs}


@pytest.mark.parametrize("component", ["operator", "trainer"])
def test_base_images_are_pinned_to_exact_versions(component: str) -> None:
    images = base_images(DOCKERFILES[component].read_text())
    assert images
    for image in images:
        tag = image.split("@")[0].rsplit(":", 1)[-1]
        assert ":" in image and tag != "latest", image
        assert re.search(r"\d+\.\d+\.\d+", tag), f"{image}: tag is not an exact version"


@pytest.mark.parametrize("component", ["operator", "trainer"])
def test_final_stage_runs_as_non_root_user(component: str) -> None:
    text = DOCKERFILES[component].read_text()
    final = text[text.rindex("\nFROM ") :]
    users = re.findall(r"^USER (\S+)", final, re.M)
    assert users, "no USER in the final stage"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "the last USER must be a numeric non-root uid"


def test_operator_image_has_no_torch_and_pins_every_base_dependency() -> None:
    text = DOCKERFILES["operator"].read_text()
    install = re.findall(r"pip install [^\n]*", text)
    assert install and all("[trainer" not in line for line in install)
    assert "torch" not in pins(CONSTRAINTS["operator"])
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    missing = requirement_names(project["dependencies"]) - set(pins(CONSTRAINTS["operator"]))
    assert not missing, f"operator/constraints.txt does not pin: {sorted(missing)}"


def test_trainer_image_pins_every_trainer_dependency() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = requirement_names(
        project["dependencies"] + extras["trainer"] + extras["qlora"] + extras["gpu"]
    )
    missing = wanted - set(pins(CONSTRAINTS["trainer"]))
    assert not missing, f"trainer/constraints.txt does not pin: {sorted(missing)}"
    text = DOCKERFILES["trainer"].read_text()
    # The requirements stage writes the release list from pyproject.toml; the cuda stage
    # installs it under the pins.
    assert "p['dependencies'] + x['trainer'] + x['qlora'] + x['gpu']" in text
    assert "requirements-cuda.txt" in text.split("AS cuda", 1)[1]
    assert "--constraint /tmp/deps/constraints.txt" in text.split("AS cuda", 1)[1]


@pytest.mark.parametrize("component", ["operator", "trainer"])
def test_pins_match_the_tested_environment(component: str) -> None:
    """What the images install is what the test-suite ran with (where it is installed here)."""
    differ = []
    for name, version in pins(CONSTRAINTS[component]).items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # e.g. bitsandbytes: GPU only
        if installed.split("+")[0] != version:
            differ.append(f"{name}: image {version}, tested {installed}")
    assert not differ, "\n".join(differ)
