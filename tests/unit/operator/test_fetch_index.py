"""The Reader takes worker pods from the watch-fed index: no LIST per pass."""

from __future__ import annotations

import pytest
from kubernetes import client

from kubetune_operator.fetch import Reader, index_entry
from kubetune_operator.reconcile.observe import worker_from_pod
from tests.unit.operator.helpers import pod as make_pod

pytestmark = pytest.mark.unit


def pod(name: str, owner_uid: str) -> dict[str, object]:
    return {"metadata": {"name": name, "ownerReferences": [{"uid": owner_uid}]}}


def test_pods_come_from_the_index_and_only_the_jobs_own() -> None:
    # Port 9 on loopback refuses connections: any API call would raise.
    api = client.ApiClient(client.Configuration(host="http://127.0.0.1:9"))
    index = {("ns", "a"): [pod("a-0", "uid-a"), pod("a-0-old", "uid-gone")]}
    reader = Reader(api, pod_index=index)
    assert [p["metadata"]["name"] for p in reader.pods("ns", "a", "uid-a")] == ["a-0"]
    assert len(reader.pods("ns", "a", None)) == 2
    assert reader.pods("ns", "b", "uid-b") == []


def test_index_entries_keep_what_observing_reads_and_drop_managed_fields() -> None:
    full = make_pod(1, phase="Failed", exit_code=137, reason="OOMKilled")
    full["metadata"]["managedFields"] = [{"manager": "kubelet", "fieldsV1": {"f:status": {}}}]
    full["spec"]["containers"] = [{"name": "trainer", "image": "x", "env": [{"name": "A"}] * 50}]
    entry = index_entry(full)
    assert "managedFields" not in entry["metadata"] and "containers" not in entry["spec"]
    assert worker_from_pod(entry) == worker_from_pod(full)
    entry["status"]["phase"] = "changed"
    assert full["status"]["phase"] == "Failed", "the entry must be a private copy"
