"""The spec is immutable after creation, except runPolicy.suspend (CEL transition rules)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from harness import ControlPlane
from tests.unit.api_cases import IMMUTABLE_EDITS, valid_manifest

pytestmark = pytest.mark.k8s


def nested(path: str, value: Any) -> dict[str, Any]:
    """{"a": {"b": value}} from "a.b": a merge patch that sets one field."""
    out: Any = value
    for key in reversed(path.split(".")):
        out = {key: out}
    return dict(out)


@pytest.fixture
def job(control_plane: ControlPlane, crd_installed: str, namespace: str) -> tuple[str, str]:
    """A created FineTuneJob: (namespace, name)."""
    control_plane.kubectl(
        "create", "-n", namespace, "-f", "-", input=json.dumps(valid_manifest("frozen"))
    )
    return namespace, "frozen"


def patch(cp: ControlPlane, job: tuple[str, str], body: dict[str, Any]) -> Any:
    """Merge-patch the job; the CompletedProcess (not checked)."""
    ns, name = job
    return cp.kubectl(
        "patch", "ftj", name, "-n", ns, "--type=merge", "-p", json.dumps(body), check=False
    )


@pytest.mark.parametrize(
    ("path", "field", "value"), IMMUTABLE_EDITS, ids=[e[0] for e in IMMUTABLE_EDITS]
)
def test_spec_change_is_refused(
    control_plane: ControlPlane, job: tuple[str, str], path: str, field: str, value: Any
) -> None:
    out = patch(control_plane, job, nested(path, value))
    assert out.returncode != 0, f"changing {path} was accepted"
    assert field in out.stderr and "immutable" in out.stderr, out.stderr


def test_suspend_can_flip_both_ways(control_plane: ControlPlane, job: tuple[str, str]) -> None:
    ns, name = job

    def read() -> dict[str, Any]:
        return dict(
            json.loads(control_plane.kubectl("get", "ftj", name, "-n", ns, "-o", "json").stdout)
        )

    before = read()
    for suspend in (True, False):
        out = patch(control_plane, job, {"spec": {"runPolicy": {"suspend": suspend}}})
        assert out.returncode == 0, out.stderr
        assert read()["spec"]["runPolicy"]["suspend"] is suspend
    after = read()
    assert after["metadata"]["generation"] == before["metadata"]["generation"] + 2
    assert after["spec"]["training"] == before["spec"]["training"]
