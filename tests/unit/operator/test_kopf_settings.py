"""Kopf scans the cluster only when it watches the whole cluster."""

from __future__ import annotations

import kopf
import pytest

from kubetune_operator.kopf_settings import NoDiffBase, scan_cluster_only_when_cluster_wide

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("clusterwide, disabled", [(False, True), (True, False)])
def test_scanning_follows_the_watch_scope(clusterwide: bool, disabled: bool) -> None:
    settings = kopf.OperatorSettings()
    assert settings.scanning.disabled is False  # Kopf's default: list namespaces and CRDs
    settings.peering.clusterwide = clusterwide  # as `kopf run` sets it before startup handlers
    scan_cluster_only_when_cluster_wide(settings)
    assert settings.scanning.disabled is disabled


def test_no_handler_needs_a_diff_base() -> None:
    """NoDiffBase is only right while the operator has no change handlers and no daemons:
    registering one must bring a real diff-base storage back."""
    import kubetune_operator.handlers  # noqa: F401  (registers the handlers)

    registry = kopf.get_default_registry()
    assert registry._changing.get_all_handlers() == [], "change handlers need a diff base"
    assert registry._spawning.get_all_handlers() == [], "daemons and timers need a diff base"
    assert registry._watching.get_all_handlers(), "the event handlers must be registered"


def test_no_diff_base_keeps_nothing() -> None:
    storage = NoDiffBase()
    body = kopf.Body({"metadata": {"name": "a", "annotations": {"x": "y"}}, "spec": {"a": 1}})
    assert storage.fetch(body=body) is None
    assert storage.build(body=body) == {}
