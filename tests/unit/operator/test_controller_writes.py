"""The controller's writes: children applied concurrently (pods after what they need)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from kubernetes.client import ApiException

from kubetune_operator.controller import Controller, waves
from kubetune_operator.reconcile.plan import DefaultCheckpointStore, OperatorSettings
from tests.unit.operator.helpers import T0, manifest, pod

pytestmark = pytest.mark.unit


def job_body(nodes: int) -> dict[str, Any]:
    """The test manifest as the API server returns it, with `nodes` workers."""
    doc = manifest()
    doc["spec"]["resources"] = {**doc["spec"].get("resources", {}), "nodes": nodes}
    doc["spec"]["training"].pop("globalBatchSize", None)
    doc["spec"].pop("queue", None)  # a queued job starts no pod before Kueue admits it
    doc["metadata"].update(namespace="ns", uid="uid-1", resourceVersion="7", generation=1)
    return doc


class Reader:
    def __init__(self, body: dict[str, Any], pods: list[dict[str, Any]] | None = None) -> None:
        self.body, self.pod_list = body, pods or []

    def job(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.body

    def pods(self, namespace: str, job: str, uid: str | None) -> list[dict[str, Any]]:
        return self.pod_list

    def remember(self, body: dict[str, Any], replaces: str | None) -> None:
        self.remembered = (body, replaces)

    def invalidate(self, namespace: str, name: str) -> None:
        self.invalidated = (namespace, name)


class Writer:
    """Records applies with how many were in flight; each takes a little time."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.applied: list[tuple[str, str]] = []
        self.key_secrets: list[str] = []
        self.active = self.max_active = 0
        self.status_patches: list[dict[str, Any]] = []
        self.conflict = False

    def apply(self, obj: dict[str, Any]) -> None:
        with self.lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        time.sleep(0.02)
        with self.lock:
            self.active -= 1
            self.applied.append((obj["kind"], obj["metadata"]["name"]))

    def create(self, obj: dict[str, Any]) -> bool:
        self.apply(obj)
        return True

    def ensure(self, obj: dict[str, Any]) -> None:
        self.apply(obj)

    def ensure_key_secret(self, namespace: str, name: str, key: str) -> None:
        self.key_secrets.append(name)

    def patch_status(
        self, namespace: str, name: str, rv: str, patch: dict[str, Any]
    ) -> dict[str, Any]:
        if self.conflict:
            raise ApiException(status=409, reason="Conflict")
        self.status_patches.append(patch)
        return {"metadata": {"namespace": namespace, "name": name, "resourceVersion": rv + "+"}}

    def post_event(self, body: dict[str, Any], event: Any) -> None:
        pass


def controller(reader: Reader, writer: Writer, workers: int = 8) -> Controller:
    return Controller(
        reader,  # type: ignore[arg-type]
        writer,  # type: ignore[arg-type]
        OperatorSettings(),
        clock=lambda: T0,
        apply_workers=workers,
    )


def test_a_big_gang_is_applied_concurrently_and_pods_come_after_their_service_account() -> None:
    writer = Writer()
    started = time.perf_counter()
    controller(Reader(job_body(32)), writer).reconcile("ns", "llama-lora")
    elapsed = time.perf_counter() - started
    kinds = [kind for kind, _ in writer.applied]
    assert kinds.count("Pod") == 32
    first_pod = kinds.index("Pod")
    assert {"ServiceAccount", "Role"} <= set(kinds[:first_pod])
    assert set(kinds[first_pod:]) <= {"Pod", "RoleBinding"}
    assert kinds.index("RoleBinding") > kinds.index("Role")
    assert writer.max_active > 1
    assert writer.max_active <= 8
    assert elapsed < 32 * 0.02, "pods were applied one after another"


def test_waves_put_what_is_named_before_what_names_it() -> None:
    objs = [{"kind": k} for k in ("ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Pod")]
    first, second = waves(objs)
    assert [o["kind"] for o in first] == ["ServiceAccount", "Role", "ConfigMap"]
    assert [o["kind"] for o in second] == ["RoleBinding", "Pod"]


def test_one_apply_worker_still_applies_everything_in_order() -> None:
    writer = Writer()
    controller(Reader(job_body(3)), writer, workers=1).reconcile("ns", "llama-lora")
    assert writer.max_active == 1
    assert [k for k, _ in writer.applied][-3:] == ["Pod", "Pod", "Pod"]


def test_pods_created_but_not_yet_watched_are_not_applied_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    writer = Writer()
    ctl = controller(Reader(job_body(4)), writer)  # the pod index never catches up here
    ctl.reconcile("ns", "llama-lora")
    first = len(writer.applied)
    ctl.reconcile("ns", "llama-lora")
    assert len(writer.applied) == first, "the second pass re-applied pods it had just created"
    monkeypatch.setattr("kubetune_operator.controller.EXPECT_SECONDS", -1.0)
    ctl.reconcile("ns", "llama-lora")
    assert [k for k, _ in writer.applied].count("Pod") == 8, "expired expectations: re-apply"


def test_observed_pods_stop_being_expected() -> None:
    writer = Writer()
    reader = Reader(job_body(2))
    ctl = controller(reader, writer)
    ctl.reconcile("ns", "llama-lora")
    names = [n for k, n in writer.applied if k == "Pod"]
    reader.pod_list = [{"metadata": {"name": n, "labels": {}}} for n in names]
    ctl._expected_pods(("ns", "llama-lora"), set(names))
    assert ctl.expected == {}


def test_a_written_status_is_handed_to_the_reader_and_a_conflict_invalidates_it() -> None:
    """The next pass must not decide on the version the operator just replaced: the reader gets
    the job as written; after a 409 it must read the job from the API server."""
    writer, reader = Writer(), Reader(job_body(1))
    ctl = controller(reader, writer)
    ctl.reconcile("ns", "llama-lora")
    written, replaces = reader.remembered
    assert (written["metadata"]["resourceVersion"], replaces) == ("7+", "7")
    writer.conflict = True
    with pytest.raises(ApiException):
        ctl.reconcile("ns", "llama-lora")
    assert reader.invalidated == ("ns", "llama-lora")


def test_count_only_status_changes_wait_for_the_interval_and_phase_changes_do_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pods of a gang change one by one: counts are written at most once per interval, while
    a phase change (what users and tools wait for) is written at once."""
    writer, reader = Writer(), Reader(job_body(2))
    ctl = controller(reader, writer)
    ctl.reconcile("ns", "llama-lora")  # first look: phase Pending, written at once
    assert writer.status_patches[-1]["phase"] == "Pending"
    reader.body["status"] = dict(writer.status_patches[-1])
    reader.pod_list = [pod(0, phase="Pending", scheduled=False)]
    delay = ctl.reconcile("ns", "llama-lora")
    assert len(writer.status_patches) == 1, "a count-only change was written at once"
    assert delay is not None and delay <= 1.0, "the pass must come back to write the counts"

    reader.pod_list = [pod(0, phase="Pending"), pod(1, phase="Pending")]  # all scheduled
    ctl.reconcile("ns", "llama-lora")
    assert writer.status_patches[-1]["phase"] == "Initializing", "a phase change must not wait"

    reader.body["status"] = {**reader.body["status"], **writer.status_patches[-1]}
    reader.pod_list = [pod(0, phase="Running"), pod(1, phase="Pending")]
    written = len(writer.status_patches)
    ctl.reconcile("ns", "llama-lora")
    assert len(writer.status_patches) == written
    monkeypatch.setattr("kubetune_operator.controller.COUNTS_INTERVAL", 0.0)
    ctl.reconcile("ns", "llama-lora")
    assert writer.status_patches[-1]["workers"]["running"] == 1, "the deferred counts land"


def test_a_job_that_cannot_be_planned_is_failed_naming_the_field_and_not_retried() -> None:
    """hf:// model and data naming different token secrets cannot become pods: the job's status
    says so (Failed, InvalidSpec, the field) in one pass, no child is created, and the pass does
    not raise (which would retry it forever with the job left Pending)."""
    body = job_body(2)
    body["spec"]["dataset"]["train"] = "hf://datasets/org/data"
    body["spec"]["dataset"]["credentialsSecret"] = "other-token"
    writer = Writer()
    assert controller(Reader(body), writer).reconcile("ns", "llama-lora") is None
    assert writer.applied == []
    patch = writer.status_patches[-1]
    assert patch["phase"] == "Failed" and patch["lastFailure"]["reason"] == "InvalidSpec"
    assert "spec.dataset.credentialsSecret" in patch["message"]


@pytest.mark.parametrize(
    ("spec_checkpoint", "default_store", "key"),
    [(True, False, True), (False, True, True), (False, False, False)],
)
def test_the_checkpoint_key_exists_before_workers_that_save_checkpoints(
    spec_checkpoint: bool, default_store: bool, key: bool
) -> None:
    """Workers that save (to spec.checkpoint or the operator's default store) sign with the
    namespace's key, so its Secret is ensured before their pods; workers that save nothing
    need none."""
    body = job_body(2)
    if not spec_checkpoint:
        body["spec"].pop("checkpoint", None)
    store = DefaultCheckpointStore("s3://platform/ckpt") if default_store else None
    writer = Writer()
    Controller(
        Reader(body),  # type: ignore[arg-type]
        writer,  # type: ignore[arg-type]
        OperatorSettings(default_checkpoint=store),
        clock=lambda: T0,
    ).reconcile("ns", "llama-lora")
    assert [k for k, _ in writer.applied].count("Pod") == 2
    assert writer.key_secrets == (["kubetune-checkpoint-key"] if key else [])
