"""The Reader takes worker pods from the watch-fed index: no LIST per pass."""

from __future__ import annotations

import pytest
from kubernetes import client

from kubetune_operator.fetch import Reader, choose_newer, index_entry, job_entry
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


def offline_reader(jobs: dict[tuple[str, str], list[dict[str, object]]]) -> Reader:
    """A reader whose API client cannot connect: any GET raises."""
    api = client.ApiClient(client.Configuration(host="http://127.0.0.1:9"))
    api.configuration.retries = 0
    return Reader(api, pod_index={}, job_index=jobs)


def job(version: str, phase: str | None = None) -> dict[str, object]:
    meta = {"namespace": "ns", "name": "a", "resourceVersion": version, "managedFields": [{}]}
    return {"metadata": meta, "status": {"phase": phase} if phase else {}}


def test_jobs_come_from_the_index_without_managed_fields_and_as_copies() -> None:
    index = {("ns", "a"): [job_entry(job("5", "Running"))]}
    reader = offline_reader(index)
    body = reader.job("ns", "a")
    assert body is not None and body["status"] == {"phase": "Running"}
    assert "managedFields" not in body["metadata"]
    body["status"]["phase"] = "mutated"
    assert index[("ns", "a")][0]["status"] == {"phase": "Running"}, "must hand out a copy"
    assert reader.job("ns", "gone") is None


def test_a_written_job_wins_until_the_watch_moves_past_the_version_it_replaced() -> None:
    index = {("ns", "a"): [job_entry(job("5", "Pending"))]}
    reader = offline_reader(index)
    reader.remember(job("6", "Running"), replaces="5")
    assert reader.job("ns", "a")["metadata"]["resourceVersion"] == "6"  # type: ignore[index]
    index[("ns", "a")] = [job_entry(job("8", "Running"))]  # the watch caught up, and more
    assert reader.job("ns", "a")["metadata"]["resourceVersion"] == "8"  # type: ignore[index]
    assert reader.newer == {}, "once the index is current the remembered body is dropped"


def test_several_writes_ahead_of_the_watch_keep_the_latest() -> None:
    """Two status writes before the watch shows the first: the index still holds the version
    the first write replaced, which must not be taken for current."""
    index = {("ns", "a"): [job_entry(job("5", "Pending"))]}
    reader = offline_reader(index)
    reader.remember(job("6", "Starting"), replaces="5")
    reader.remember(job("7", "Running"), replaces="6")
    assert reader.job("ns", "a")["metadata"]["resourceVersion"] == "7"  # type: ignore[index]
    index[("ns", "a")] = [job_entry(job("6", "Starting"))]
    assert reader.job("ns", "a")["metadata"]["resourceVersion"] == "7"  # type: ignore[index]
    index[("ns", "a")] = [job_entry(job("7", "Running"))]
    assert reader.job("ns", "a")["metadata"]["resourceVersion"] == "7"  # type: ignore[index]
    assert reader.newer == {}


def test_versions_compare_for_equality_only() -> None:
    older = frozenset({"5"})
    assert choose_newer(job("5"), (older, job("6"))) == job("6")
    assert choose_newer(job("9"), (older, job("6"))) == job("9")
    assert choose_newer(job("5"), None) == job("5")
    assert choose_newer(job("5"), (frozenset({None}), job("6"))) == job("5")


def test_after_a_conflict_the_next_read_goes_to_the_api_server() -> None:
    reader = offline_reader({("ns", "a"): [job_entry(job("5"))]})
    reader.invalidate("ns", "a")
    with pytest.raises(Exception) as err:  # the GET is attempted, and cannot connect
        reader.job("ns", "a")
    assert "127.0.0.1" in str(err.value) or "Connection" in type(err.value).__name__
