"""The generated CRD against a real apiserver: it installs, and kubectl understands it."""

from __future__ import annotations

import json

import pytest

from harness import ControlPlane

pytestmark = pytest.mark.k8s


def test_crd_is_established_with_short_name_and_categories(
    control_plane: ControlPlane, crd_installed: str
) -> None:
    crd = json.loads(control_plane.kubectl("get", "crd", crd_installed, "-o", "json").stdout)
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions.get("Established") == "True"
    assert conditions.get("NamesAccepted") == "True"
    assert crd["status"]["acceptedNames"]["shortNames"] == ["ftj"]
    resources = control_plane.kubectl(
        "api-resources", "--api-group=kubetune.dev", "-o", "wide"
    ).stdout
    assert "ftj" in resources and "kubetune" in resources
