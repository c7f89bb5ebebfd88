"""The embedded core/v1 schemas (api/k8s_types.json) are what the apiserver the tests run
publishes: regenerate them with hack/gen_k8s_types.py when the Kubernetes version moves."""

from __future__ import annotations

import json

import pytest

from harness import ControlPlane
from kubetune_operator.api.k8s_types import extract, schemas

pytestmark = pytest.mark.k8s


def test_embedded_types_match_the_apiservers_openapi(control_plane: ControlPlane) -> None:
    openapi = json.loads(control_plane.kubectl("get", "--raw", "/openapi/v3/api/v1").stdout)
    assert extract(openapi) == schemas()
