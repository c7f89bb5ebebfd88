"""Every manifest in examples/ is accepted by the real apiserver (server-side dry-run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import ControlPlane
from harness.binaries import REPO_ROOT

pytestmark = pytest.mark.k8s

EXAMPLES = sorted((REPO_ROOT / "examples").glob("*.yaml"))


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_passes_server_side_dry_run(
    example: Path, control_plane: ControlPlane, crd_installed: str, namespace: str
) -> None:
    out = control_plane.kubectl(
        "apply", "--dry-run=server", "-n", namespace, "-f", str(example), check=False
    )
    assert out.returncode == 0, f"{example.name} refused:\n{out.stderr}"
    kinds = ("finetunejob", "finetunesweep", "finetuneschedule")
    assert any(f"{kind}.kubetune.dev/" in out.stdout for kind in kinds), out.stdout
    assert "(server dry run)" in out.stdout


def test_dry_run_refuses_a_broken_example(
    control_plane: ControlPlane, crd_installed: str, namespace: str
) -> None:
    """The check above has teeth: a bad field in an example is refused, naming the field."""
    text = (REPO_ROOT / "examples" / "qlora-single-gpu.yaml").read_text()
    broken = text.replace("gpusPerNode: 1", "gpusPerNode: 0")
    out = control_plane.kubectl(
        "apply", "--dry-run=server", "-n", namespace, "-f", "-", input=broken, check=False
    )
    assert out.returncode != 0
    assert "qlora needs GPUs" in out.stderr
