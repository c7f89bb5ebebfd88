"""Objects a job author (or its trainer) can write that must not stop the operator or reach past
the job: deep nesting, name conflicts with foreign objects, forged status."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from harness import ControlPlane, eventually
from kubetune_operator.api import constants as c
from tests.k8s.operator.cluster import BASE_SPEC, Cluster, Operator

pytestmark = pytest.mark.k8s


def phase_is(cluster: Cluster, name: str, phase: str) -> Any:
    return lambda: cluster.status(name) if cluster.status(name).get("phase") == phase else None


def deep_job(name: str, depth: int) -> str:
    """A FineTuneJob whose spec.deepspeed.config nests `depth` objects, as raw JSON (the
    kubernetes client itself could not serialize it)."""
    spec = json.dumps({**BASE_SPEC, "deepspeed": {"config": "@"}})
    nested = '{"a":' * depth + "1" + "}" * depth
    body = {"apiVersion": c.API_VERSION, "kind": c.KIND, "metadata": {"name": name}}
    return json.dumps({**body, "spec": "@"}).replace('"@"', spec).replace('"@"', nested)


def create_raw(cp: ControlPlane, namespace: str, body: str, dry_run: bool = False) -> str | None:
    """POST a job as raw JSON text (kubectl create --raw); the refusal, or None if stored."""
    path = f"/apis/{c.GROUP}/{c.VERSION}/namespaces/{namespace}/{c.PLURAL}"
    out = cp.kubectl(
        "create", "--raw", path + ("?dryRun=All" if dry_run else ""), "-f", "-",
        input=body, check=False,
    )  # fmt: skip
    return None if out.returncode == 0 else out.stderr


def status_by_kubectl(cp: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    """A job's status as kubectl prints it (the Python client cannot decode the deep job)."""
    out = cp.kubectl("get", c.PLURAL, name, "-n", namespace, "-o", "jsonpath={.status}")
    return dict(json.loads(out.stdout or "{}"))


def deepest_admitted(cp: ControlPlane, namespace: str) -> int:
    """The deepest spec.deepspeed.config the apiserver stores (binary search with dry runs)."""
    low, high = 1, 20000
    while low < high:
        mid = (low + high + 1) // 2
        if create_raw(cp, namespace, deep_job("probe", mid), dry_run=True) is None:
            low = mid
        else:
            high = mid - 1
    return low


def test_deepest_job_the_apiserver_admits_fails_alone(
    control_plane: ControlPlane, cluster: Cluster, operator: Operator
) -> None:
    """A job nested as deep as the apiserver admits gets Failed/InvalidSpec naming the field;
    the operator stays up (also across a restart, whose initial listing holds that job) and a
    job running beside it succeeds."""
    cluster.create_job("other")
    eventually(lambda: len(cluster.pod_names("other")) == 2, 30, "other's pods", operator.log)
    cluster.set_gang("other", "Running")
    eventually(phase_is(cluster, "other", "Running"), 30, "other running", operator.log)

    depth = deepest_admitted(control_plane, cluster.ns)
    assert create_raw(control_plane, cluster.ns, deep_job("deep", depth)) is None
    print(f"deepest spec.deepspeed.config the apiserver admits: {depth} levels")

    def failed() -> dict[str, Any] | None:
        st = status_by_kubectl(control_plane, cluster.ns, "deep")
        return st if st.get("phase") == "Failed" else None

    st = eventually(failed, 60, "deep job Failed", operator.log)
    assert st["lastFailure"]["reason"] == "InvalidSpec"
    assert "spec.deepspeed.config: nested deeper than" in st["message"], st["message"]
    assert cluster.pod_names("deep") == []
    eventually(
        lambda: any(
            e.reason == "InvalidSpec"
            for e in cluster.core.list_namespaced_event(
                cluster.ns, field_selector="involvedObject.name=deep"
            ).items
        ),
        30,
        "an InvalidSpec event",
        operator.log,
    )

    operator.kill()
    operator.start(min_passes=1)  # the initial listing holds the deep job
    cluster.set_gang("other", "Succeeded")
    eventually(phase_is(cluster, "other", "Succeeded"), 60, "other Succeeded", operator.log)
    assert operator.passes() > 0  # still answering
    assert "RecursionError" not in operator.log.read_text()


def test_a_namesake_the_job_does_not_own_is_never_taken_over(
    cluster: Cluster, operator: Operator
) -> None:
    """Objects someone else made under the names of the job's children keep their content and
    owners; the job reports the conflict, and proceeds once they are gone."""
    ns = cluster.ns
    rules = [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]
    cluster.core.create_namespaced_service_account(ns, {"metadata": {"name": "victim-trainer"}})
    cluster.rbac.create_namespaced_role(
        ns, {"metadata": {"name": "victim-trainer"}, "rules": rules}
    )
    cluster.core.create_namespaced_service(
        ns,
        {
            "metadata": {"name": "victim-workers"},
            "spec": {"selector": {"app": "db"}, "ports": [{"port": 5432}]},
        },
    )
    cluster.create_job("victim")

    def conflict() -> dict[str, Any] | None:
        conds = {x["type"]: x for x in cluster.status("victim").get("conditions", [])}
        return (
            conds.get("NameConflict")
            if conds.get("NameConflict", {}).get("status") == "True"
            else None
        )

    cond = eventually(conflict, 30, "NameConflict condition", operator.log)
    assert "victim-trainer exists and does not belong to this job" in cond["message"], cond
    assert cluster.status("victim")["phase"] == "Pending"
    sa = cluster.raw(cluster.core.read_namespaced_service_account("victim-trainer", ns))
    role = cluster.raw(cluster.rbac.read_namespaced_role("victim-trainer", ns))
    svc = cluster.raw(cluster.core.read_namespaced_service("victim-workers", ns))
    for obj in (sa, role, svc):
        assert not obj["metadata"].get("ownerReferences"), obj["metadata"]
    assert role["rules"] == rules
    assert svc["spec"]["selector"] == {"app": "db"}
    assert cluster.pod_names("victim") == []

    cluster.core.delete_namespaced_service_account("victim-trainer", ns)
    cluster.rbac.delete_namespaced_role("victim-trainer", ns)
    cluster.core.delete_namespaced_service("victim-workers", ns)
    eventually(lambda: len(cluster.pod_names("victim")) == 2, 60, "pods after", operator.log)
    conds = {x["type"]: x["status"] for x in cluster.status("victim")["conditions"]}
    eventually(
        lambda: (
            {x["type"]: x["status"] for x in cluster.status("victim")["conditions"]}.get(
                "NameConflict"
            )
            == "False"
        ),
        30,
        "NameConflict resolved",
        operator.log,
    )
    assert "Failed" not in conds


def test_a_downstream_job_takes_the_upstream_output_from_its_spec_not_its_status(
    cluster: Cluster, operator: Operator
) -> None:
    """Whatever the upstream's status claims (a trainer token may write status), an ftj://
    source resolves to the output the upstream job's spec declares."""
    cluster.create_job("base")
    eventually(lambda: len(cluster.pod_names("base")) == 2, 30, "base pods", operator.log)
    forged = {"status": {"phase": "Succeeded", "output": {"uri": "pvc://other-team/weights"}}}
    cluster.custom.patch_namespaced_custom_object_status(
        c.GROUP, c.VERSION, cluster.ns, c.PLURAL, "base", forged
    )
    cluster.create_job("next", model={"source": "ftj://base"})
    eventually(lambda: len(cluster.pod_names("next")) == 2, 30, "next pods", operator.log)
    config = cluster.core.read_namespaced_config_map("next-a1-config", cluster.ns)
    trainer = json.loads(config.data["trainer.json"])
    assert trainer["model"]["source"] == BASE_SPEC["output"]["uri"]
    pod = cluster.pods("next")[0]
    claims = [
        v["persistentVolumeClaim"]["claimName"]
        for v in pod["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    ]
    assert "other-team" not in claims


def test_each_job_gets_a_network_policy_around_its_workers(
    control_plane: ControlPlane, crd_installed: str, cluster: Cluster, tmp_path: Path
) -> None:
    """Where the cluster enforces them (the chart turns this on), a job's workers take
    connections only from each other, and scrapes of their metrics port only from the
    monitoring namespace."""
    settings = {"KUBETUNE_NETWORK_POLICY": "true", "KUBETUNE_METRICS_NAMESPACE": "monitoring"}
    op = Operator(control_plane, cluster.ns, tmp_path / "operator.log", settings)
    op.start()
    try:
        job = cluster.create_job("fenced")
        eventually(lambda: len(cluster.pod_names("fenced")) == 2, 30, "pods", op.log)
    finally:
        op.stop()
    policy = cluster.raw(
        client.NetworkingV1Api(cluster.api).read_namespaced_network_policy(
            "fenced-workers", cluster.ns
        )
    )
    assert policy["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]
    workers = {"matchLabels": {c.LABEL_JOB: "fenced", c.LABEL_ROLE: "worker"}}
    spec = policy["spec"]
    assert spec["podSelector"] == workers and spec["policyTypes"] == ["Ingress"]
    peers, scrapes = spec["ingress"]
    assert peers == {"from": [{"podSelector": workers}]}
    assert scrapes["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]
    assert scrapes["ports"] == [{"port": c.TRAINER_METRICS_PORT, "protocol": "TCP"}]
    for pod in cluster.pods("fenced"):  # the policy selects every worker
        labels = pod["metadata"]["labels"]
        assert all(labels[k] == v for k, v in workers["matchLabels"].items())


def test_a_job_reaches_only_the_endpoints_and_code_the_platform_allows(
    control_plane: ControlPlane, crd_installed: str, cluster: Cluster, tmp_path: Path
) -> None:
    """Env that would send a job's credentials elsewhere is refused by the apiserver; endpoints
    and remote code beyond the platform policy fail the job before any pod exists."""
    hub = {"source": "hf://org/model", "credentialsSecret": "hf-token"}
    for name in ("HF_ENDPOINT", "AWS_ENDPOINT_URL"):
        env = [{"name": name, "value": "https://collector.example.org"}]
        with pytest.raises(client.ApiException) as refused:
            cluster.create_job("exfil", model=hub, resources={"env": env})
        assert f"spec.resources.env: {name}: names kubetune reserves" in str(refused.value.body)

    policy = {
        "allowedEndpoints": {"checkpoint": ["http://minio.storage:9000"]},
        "allowTrustRemoteCode": False,
    }
    op = Operator(
        control_plane,
        cluster.ns,
        tmp_path / "operator.log",
        {"KUBETUNE_POLICY": json.dumps(policy)},
    )
    op.start()
    try:
        cluster.create_job(
            "elsewhere",
            checkpoint={"uri": "s3://ckpt/a", "endpoint": "https://collector.example.org"},
        )
        cluster.create_job("remote-code", model={"trustRemoteCode": True})
        cluster.create_job(
            "allowed", checkpoint={"uri": "s3://ckpt/b", "endpoint": "http://minio.storage:9000"}
        )
        eventually(lambda: len(cluster.pod_names("allowed")) == 2, 30, "allowed pods", op.log)
        for name, field in (
            (
                "elsewhere",
                "spec.checkpoint.endpoint: 'https://collector.example.org' is not allowed",
            ),
            ("remote-code", "spec.model.trustRemoteCode: the platform policy does not allow"),
        ):
            st = eventually(phase_is(cluster, name, "Failed"), 30, f"{name} Failed", op.log)
            assert st["lastFailure"]["reason"] == "PolicyViolation"
            assert field in st["message"], st["message"]
            assert cluster.pod_names(name) == []
    finally:
        op.stop()


def test_a_job_whose_pods_the_apiserver_refuses_fails_with_its_reason(
    cluster: Cluster, operator: Operator
) -> None:
    """What neither the CRD nor the spec check knows (an affinity term "In" no values, which
    core/v1 pod validation refuses) fails the job with the apiserver's reason instead of being
    retried forever without a status."""
    term = {"matchExpressions": [{"key": "pool", "operator": "In", "values": []}]}
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [term]}}}  # fmt: skip
    cluster.create_job("badterm", resources={"affinity": affinity})
    st = eventually(phase_is(cluster, "badterm", "Failed"), 60, "Failed", operator.log)
    assert st["lastFailure"]["reason"] == "InvalidSpec"
    assert "the apiserver refused a child object of the job" in st["message"]
    assert "matchExpressions[0].values" in st["message"], st["message"]
    assert cluster.pod_names("badterm") == []
