"""The operator against a real kube-apiserver (+ controller manager): children, status, gang
restarts, backoff, suspend/resume, garbage collection, crash safety, immutability, stall."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from harness import ControlPlane, eventually
from kubetune_operator.api import constants as c
from tests.k8s.operator.cluster import Cluster, Operator

pytestmark = pytest.mark.k8s


def phase_is(cluster: Cluster, name: str, phase: str) -> Any:
    return lambda: cluster.status(name) if cluster.status(name).get("phase") == phase else None


def env_of(pod: dict[str, Any]) -> dict[str, Any]:
    return {
        e["name"]: e.get("value", e.get("valueFrom")) for e in pod["spec"]["containers"][0]["env"]
    }


def start_running(cluster: Cluster, op: Operator, name: str, **spec: Any) -> dict[str, Any]:
    """Create a job, wait for its two pods, mark them Running, wait for phase Running."""
    job = cluster.create_job(name, **spec)
    eventually(lambda: len(cluster.pod_names(name)) == 2, 30, "2 worker pods", op.log)
    cluster.set_gang(name, "Running")
    eventually(phase_is(cluster, name, "Running"), 30, "phase Running", op.log)
    return job


def test_create_makes_owned_children_with_rendezvous_env(
    cluster: Cluster, operator: Operator
) -> None:
    job = cluster.create_job("demo")
    uid = job["metadata"]["uid"]
    pods = eventually(
        lambda: cluster.pods("demo") if len(cluster.pods("demo")) == 2 else None,
        30,
        "pods",
        operator.log,
    )
    ns = cluster.ns
    reads = [
        lambda: cluster.core.read_namespaced_service_account("demo-trainer", ns),
        lambda: cluster.rbac.read_namespaced_role("demo-trainer", ns),
        lambda: cluster.rbac.read_namespaced_role_binding("demo-trainer", ns),
        lambda: cluster.core.read_namespaced_config_map("demo-a1-config", ns),
        lambda: cluster.core.read_namespaced_service("demo-workers", ns),
    ]

    def supporting() -> list[dict[str, Any]] | None:
        """The pods' wave is written concurrently with the RoleBinding, ConfigMap and Service:
        a pod may be seen a moment before them."""
        try:
            return [cluster.raw(read()) for read in reads]
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    children = [*eventually(supporting, 30, "the supporting children", operator.log), *pods]
    for obj in children:
        refs = obj["metadata"]["ownerReferences"]
        assert [(r["kind"], r["uid"], r["controller"]) for r in refs] == [
            ("FineTuneJob", uid, True)
        ]
        managers = {m["manager"] for m in obj["metadata"]["managedFields"]}
        assert c.FIELD_MANAGER in managers
    for rank, pod in enumerate(pods):
        env = env_of(pod)
        assert pod["metadata"]["name"] == f"demo-a1-{rank}"
        assert env["MASTER_ADDR"] == f"demo-a1-0.demo-workers.{ns}.svc"
        assert (env["NNODES"], env["NODE_RANK"], env["NPROC_PER_NODE"], env["WORLD_SIZE"]) == (
            "2",
            str(rank),
            "1",
            "2",
        )
        assert (
            pod["spec"]["hostname"] == f"demo-a1-{rank}"
            and pod["spec"]["subdomain"] == "demo-workers"
        )
    st = eventually(
        lambda: cluster.status("demo").get("phase") and cluster.status("demo"), 30, "status"
    )
    assert st["phase"] == "Pending" and st["attempt"] == 1
    assert st["observedGeneration"] == 1
    events = cluster.core.list_namespaced_event(ns, field_selector="involvedObject.name=demo").items
    assert any(e.reason == "Pending" for e in events)


def test_all_workers_succeeded_means_job_succeeded(cluster: Cluster, operator: Operator) -> None:
    start_running(cluster, operator, "ok")
    cluster.set_gang("ok", "Succeeded")
    st = eventually(phase_is(cluster, "ok", "Succeeded"), 30, "Succeeded", operator.log)
    assert st["output"]["uri"] == "file:///out/model"
    assert st["completionTime"]
    assert {x["type"]: x["status"] for x in st["conditions"]}["Succeeded"] == "True"
    eventually(lambda: cluster.pod_names("ok") == [], 30, "pods cleaned up (cleanPodPolicy All)")
    assert 'kubetune_jobs{phase="Succeeded"} 1.0' in operator.metrics()


def test_worker_failure_restarts_then_backoff_limit_fails(
    cluster: Cluster, operator: Operator
) -> None:
    start_running(cluster, operator, "flaky")
    old_uids = {p["metadata"]["uid"] for p in cluster.pods("flaky")}
    cluster.set_pod("flaky-a1-1", "Failed", exit_code=3)  # its peer still runs: 10 s grace
    eventually(
        lambda: cluster.pod_names("flaky") == ["flaky-a2-0", "flaky-a2-1"],
        60,
        "attempt 2 pods",
        operator.log,
    )
    st = cluster.status("flaky")
    assert st["attempt"] == 2 and st["restarts"] == 1
    assert st["lastFailure"]["reason"] == "Error"
    assert st["lastFailure"]["exitCode"] == 3
    assert st["lastFailure"]["pod"] == "flaky-a1-1"
    assert not old_uids & {p["metadata"]["uid"] for p in cluster.pods("flaky")}
    assert env_of(cluster.pods("flaky")[0])["KUBETUNE_ATTEMPT"] == "2"

    cluster.set_gang("flaky", "Running")
    eventually(phase_is(cluster, "flaky", "Running"), 30, "attempt 2 running", operator.log)
    cluster.set_pod("flaky-a2-0", "Failed", exit_code=137, reason="OOMKilled")
    st = eventually(phase_is(cluster, "flaky", "Failed"), 30, "Failed", operator.log)
    failed = next(x for x in st["conditions"] if x["type"] == "Failed")
    assert failed["status"] == "True" and failed["reason"] == "BackoffLimitExceeded"
    assert st["lastFailure"]["reason"] == "OOMKilled"
    assert st["attempt"] == 2
    assert 'kubetune_job_restarts_total{reason="Error"} 1.0' in operator.metrics()


def test_suspend_deletes_workers_and_resume_starts_a_new_attempt(
    cluster: Cluster, operator: Operator
) -> None:
    start_running(cluster, operator, "pausable")
    cluster.patch_spec("pausable", {"runPolicy": {"suspend": True}})
    eventually(phase_is(cluster, "pausable", "Suspended"), 30, "Suspended", operator.log)
    eventually(lambda: cluster.pod_names("pausable", live_only=False) == [], 30, "workers deleted")
    cluster.patch_spec("pausable", {"runPolicy": {"suspend": False}})
    eventually(
        lambda: cluster.pod_names("pausable") == ["pausable-a2-0", "pausable-a2-1"],
        30,
        "attempt 2",
        operator.log,
    )
    st = cluster.status("pausable")
    assert st["attempt"] == 2 and st["restarts"] == 0
    assert next(x for x in st["conditions"] if x["type"] == "Suspended")["status"] == "False"


def test_deleting_the_job_garbage_collects_children(cluster: Cluster, operator: Operator) -> None:
    cluster.create_job("gone")
    eventually(lambda: len(cluster.pod_names("gone")) == 2, 30, "pods", operator.log)
    cluster.custom.delete_namespaced_custom_object(c.GROUP, c.VERSION, cluster.ns, c.PLURAL, "gone")

    def nothing_left() -> bool:
        sel = f"{c.LABEL_JOB}=gone"
        return not (
            cluster.core.list_namespaced_pod(cluster.ns, label_selector=sel).items
            or cluster.core.list_namespaced_config_map(cluster.ns, label_selector=sel).items
            or cluster.core.list_namespaced_service(cluster.ns, label_selector=sel).items
            or cluster.rbac.list_namespaced_role(cluster.ns, label_selector=sel).items
        )

    eventually(nothing_left, 60, "children garbage-collected")


def test_operator_killed_ten_times_keeps_the_same_pods(
    cluster: Cluster, operator: Operator
) -> None:
    start_running(cluster, operator, "steady")
    before = {p["metadata"]["name"]: p["metadata"]["uid"] for p in cluster.pods("steady")}
    version = cluster.job("steady")["metadata"]["resourceVersion"]
    for _ in range(10):
        operator.kill()
        operator.start(min_passes=1)
    eventually(lambda: operator.passes() >= 1, 10, "a pass after the last restart")
    after = {p["metadata"]["name"]: p["metadata"]["uid"] for p in cluster.pods("steady")}
    assert after == before
    job = cluster.job("steady")
    assert job["status"]["phase"] == "Running" and job["status"]["attempt"] == 1
    assert job["metadata"]["resourceVersion"] == version  # nothing rewrote the job either
    assert not job["metadata"].get("finalizers")


def test_spec_edit_of_a_running_job_is_refused(cluster: Cluster, operator: Operator) -> None:
    start_running(cluster, operator, "frozen")
    with pytest.raises(client.ApiException) as err:
        cluster.patch_spec("frozen", {"training": {"maxSteps": 99}})
    assert err.value.status == 422
    assert "immutable" in str(err.value.body)


def test_stalled_attempt_is_ended_and_retried(
    cluster: Cluster, operator: Operator, control_plane: ControlPlane
) -> None:
    start_running(cluster, operator, "stuck", runPolicy={"stallTimeout": "3s", "backoffLimit": 2})
    # Report progress as the trainer does: with the job's own ServiceAccount, status only.
    sa_config = control_plane.kubeconfig_for_service_account(cluster.ns, "stuck-trainer")
    trainer = client.CustomObjectsApi(config.new_client_from_config(config_file=str(sa_config)))
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    progress = {
        "status": {"progress": {"step": 1, "totalSteps": 10, "updatedAt": now, "attempt": 1}}
    }
    trainer.patch_namespaced_custom_object_status(
        c.GROUP,
        c.VERSION,
        cluster.ns,
        c.PLURAL,
        "stuck",
        progress,
        _content_type="application/merge-patch+json",
    )
    with pytest.raises(client.ApiException) as denied:
        trainer.patch_namespaced_custom_object(
            c.GROUP, c.VERSION, cluster.ns, c.PLURAL, "stuck", {"spec": {"runPolicy": {"suspend": True}}},
            _content_type="application/merge-patch+json",
        )  # fmt: skip
    assert denied.value.status == 403
    cluster.create_job("neighbour")
    with pytest.raises(client.ApiException) as other:
        trainer.patch_namespaced_custom_object_status(
            c.GROUP, c.VERSION, cluster.ns, c.PLURAL, "neighbour", progress,
            _content_type="application/merge-patch+json",
        )  # fmt: skip
    assert other.value.status == 403
    eventually(
        lambda: cluster.pod_names("stuck") == ["stuck-a2-0", "stuck-a2-1"],
        30,
        "attempt 2",
        operator.log,
    )
    st = cluster.status("stuck")
    assert st["lastFailure"]["reason"] == "Stalled"
    assert st["attempt"] == 2


def test_two_replicas_restart_a_failed_gang_exactly_once(
    cluster: Cluster, operator: Operator, control_plane: ControlPlane, tmp_path: Any
) -> None:
    """A second replica (no peering) racing the first: resourceVersion-guarded status writes
    mean one restart, one new gang, no duplicate pods."""
    second = Operator(control_plane, cluster.ns, tmp_path / "operator-2.log")
    second.start()
    try:
        start_running(cluster, operator, "ha")
        cluster.set_pod("ha-a1-0", "Failed", exit_code=1)  # its peer still runs: 10 s grace
        eventually(
            lambda: cluster.pod_names("ha") == ["ha-a2-0", "ha-a2-1"], 60, "attempt 2", operator.log
        )
        cluster.set_gang("ha", "Running")
        eventually(phase_is(cluster, "ha", "Running"), 30, "attempt 2 running", operator.log)
        st = cluster.status("ha")
        assert (st["attempt"], st["restarts"]) == (2, 1)
        assert cluster.pod_names("ha", live_only=False) == ["ha-a2-0", "ha-a2-1"]
        assert operator.passes() > 0 and second.passes() > 0
    finally:
        second.stop()


def test_ttl_deletes_a_finished_job(cluster: Cluster, operator: Operator) -> None:
    start_running(cluster, operator, "short", runPolicy={"ttlSecondsAfterFinished": 2})
    cluster.set_gang("short", "Succeeded")
    eventually(phase_is(cluster, "short", "Succeeded"), 30, "Succeeded", operator.log)

    def gone() -> bool:
        try:
            cluster.job("short")
        except client.ApiException as err:
            return err.status == 404
        return False

    eventually(gone, 30, "job deleted by TTL", operator.log)


def test_continuation_waits_for_the_upstream_job(cluster: Cluster, operator: Operator) -> None:
    cluster.create_job("next", model={"source": "ftj://base"})
    st = eventually(
        lambda: cluster.status("next").get("phase") and cluster.status("next"), 30, "status"
    )
    assert st["phase"] == "Pending" and "base" in st["message"]
    start_running(cluster, operator, "base")
    assert cluster.pod_names("next") == []
    cluster.set_gang("base", "Succeeded")
    eventually(
        lambda: len(cluster.pod_names("next")) == 2, 60, "continuation started", operator.log
    )
    config_map = cluster.core.read_namespaced_config_map("next-a1-config", cluster.ns)
    config_json = (config_map.data or {})["trainer.json"]
    assert '"source": "file:///out/model"' in config_json
    assert "kubetune_reconcile_duration_seconds_count" in operator.metrics()


def test_worker_deleted_while_running_restarts_the_gang(
    cluster: Cluster, operator: Operator
) -> None:
    start_running(cluster, operator, "lost")
    cluster.core.delete_namespaced_pod("lost-a1-0", cluster.ns)
    eventually(
        lambda: cluster.pod_names("lost") == ["lost-a2-0", "lost-a2-1"],
        30,
        "attempt 2",
        operator.log,
    )
    assert cluster.status("lost")["lastFailure"]["reason"] == "NodeLost"


def test_active_deadline_fails_the_job(cluster: Cluster, operator: Operator) -> None:
    start_running(cluster, operator, "late", runPolicy={"activeDeadlineSeconds": 3})
    st = eventually(phase_is(cluster, "late", "Failed"), 30, "Failed by deadline", operator.log)
    assert st["lastFailure"]["reason"] == "DeadlineExceeded"
    eventually(lambda: cluster.pod_names("late", live_only=False) == [], 30, "workers stopped")
