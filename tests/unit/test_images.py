"""The Dockerfiles and the pods agree: the trainer's CPU and CUDA images share one runtime
contract, and the users and HOME the operator's pods and the chart assume are the images'."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from kubetune_operator.reconcile.plan import HOME_DIR, TRAINER_UID

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
CONTRACT = ("ENV", "USER", "WORKDIR", "EXPOSE", "CMD", "ENTRYPOINT")


def stages(dockerfile: Path) -> dict[str, list[tuple[str, str]]]:
    """Stage name -> its instructions (keyword, argument), continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    out: dict[str, list[tuple[str, str]]] = {}
    current = "_"
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, arg = line.partition(" ")
        if keyword == "FROM":
            current = arg.split(" AS ")[-1].strip() if " AS " in arg else arg
        out.setdefault(current, []).append((keyword, " ".join(arg.split())))
    return out


def contract(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """What a container of the image runs with (the accelerator choice aside)."""
    return [(k, a) for k, a in instructions if k in CONTRACT and not a.startswith("DS_ACCELERATOR")]


def test_trainer_cpu_and_cuda_images_share_one_runtime_contract() -> None:
    trainer = stages(ROOT / "trainer" / "Dockerfile")
    assert contract(trainer["cpu"]) == contract(trainer["cuda"])
    assert ("ENV", "DS_ACCELERATOR=cpu") in trainer["cpu"]


def test_trainer_image_user_and_home_are_the_pods() -> None:
    for stage in ("cpu", "cuda"):
        instructions = stages(ROOT / "trainer" / "Dockerfile")[stage]
        assert ("USER", f"{TRAINER_UID}:{TRAINER_UID}") in instructions
        env = " ".join(a for k, a in instructions if k == "ENV")
        assert f"HOME={HOME_DIR}" in env
        for var in ("HF_HOME", "TORCH_EXTENSIONS_DIR", "TRITON_CACHE_DIR"):
            assert re.search(rf"\b{var}={re.escape(HOME_DIR)}/", env), var


def test_operator_image_user_is_the_charts() -> None:
    instructions = stages(ROOT / "operator" / "Dockerfile")
    final = instructions[list(instructions)[-1]]
    values = yaml.safe_load((ROOT / "charts" / "kubetune" / "values.yaml").read_text())
    uid = values["podSecurityContext"]["runAsUser"]
    assert ("USER", f"{uid}:{uid}") in final
    assert values["securityContext"]["readOnlyRootFilesystem"] is True


def sources(instructions: list[tuple[str, str]]) -> list[str]:
    """What the COPY/ADD steps of a stage take from the build context (not from a stage)."""
    return [
        part
        for keyword, arg in instructions
        if keyword in ("COPY", "ADD") and "--from=" not in arg
        for part in arg.split()[:-1]
        if not part.startswith("--")
    ]


def layers(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The steps that change the filesystem (each a layer)."""
    return [(k, a) for k, a in instructions if k in ("RUN", "COPY", "ADD")]


@pytest.mark.parametrize(
    ("dockerfile", "final"), [("trainer", "cpu"), ("trainer", "cuda"), ("operator", None)]
)
def test_a_code_change_rebuilds_only_the_images_top_layer(
    dockerfile: str, final: str | None
) -> None:
    """The kubetune code is installed last, from its own wheel and without dependencies; no
    step before it, in the final stage or in a stage it copies from, reads the code. So a code
    change rebuilds and ships the top layer only, not torch and the dependencies again."""
    all_stages = stages(ROOT / dockerfile / "Dockerfile")
    stage = all_stages[final or list(all_stages)[-1]]
    *lower, copy_wheel, install = layers(stage)
    assert copy_wheel[0] == "COPY" and copy_wheel[1].startswith("--from=kubetune-wheel "), (
        copy_wheel
    )
    assert install[0] == "RUN" and "pip install --no-deps --no-index" in install[1], install
    code = ("operator/", "trainer/", "README.md", ".")
    copied_from = {a.split()[0].removeprefix("--from=") for k, a in lower if "--from=" in a}
    for name in [None, *sorted(copied_from)]:
        read = sources(stage if name is None else all_stages[name])
        assert not set(read) & set(code), (name, read)
    assert "kubetune-wheel" not in copied_from
