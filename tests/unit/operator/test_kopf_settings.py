"""Kopf scans the cluster only when it watches the whole cluster."""

from __future__ import annotations

import kopf
import pytest

from kubetune_operator.kopf_settings import scan_cluster_only_when_cluster_wide

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("clusterwide, disabled", [(False, True), (True, False)])
def test_scanning_follows_the_watch_scope(clusterwide: bool, disabled: bool) -> None:
    settings = kopf.OperatorSettings()
    assert settings.scanning.disabled is False  # Kopf's default: list namespaces and CRDs
    settings.peering.clusterwide = clusterwide  # as `kopf run` sets it before startup handlers
    scan_cluster_only_when_cluster_wide(settings)
    assert settings.scanning.disabled is disabled
