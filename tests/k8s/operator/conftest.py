"""Fixtures of the operator tests: a running operator and a client for its namespace."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from harness import ControlPlane
from tests.k8s.operator.cluster import Cluster, Operator


@pytest.fixture
def operator(
    control_plane: ControlPlane, crd_installed: str, namespace: str, tmp_path: Path
) -> Iterator[Operator]:
    op = Operator(control_plane, namespace, tmp_path / "operator.log")
    op.start()
    try:
        yield op
    finally:
        op.stop()


@pytest.fixture
def cluster(k8s_api: client.ApiClient, namespace: str) -> Cluster:
    return Cluster(k8s_api, namespace)
