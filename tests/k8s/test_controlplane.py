"""The harness itself: a real apiserver, controller manager (GC, namespaces) and scheduler."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from harness import ControlPlane, eventually, start_control_plane

pytestmark = pytest.mark.k8s


def test_apiserver_reports_its_version(control_plane: ControlPlane) -> None:
    out = json.loads(control_plane.kubectl("get", "--raw", "/version").stdout)
    assert out["gitVersion"] == control_plane.git_version
    assert out["gitVersion"].startswith("v1."), "binary built without a version stamp"


def test_server_is_loopback_and_admin_can_do_anything(control_plane: ControlPlane) -> None:
    assert control_plane.server.startswith("https://127.0.0.1:")
    assert control_plane.kubectl("auth", "can-i", "*", "*").stdout.strip() == "yes"


def test_service_account_token_is_subject_to_rbac(
    control_plane: ControlPlane, namespace: str
) -> None:
    control_plane.kubectl("create", "serviceaccount", "reader", "-n", namespace)
    cfg = control_plane.kubeconfig_for_service_account(namespace, "reader")
    denied = control_plane.kubectl(
        f"--kubeconfig={cfg}", "get", "pods", "-n", namespace, check=False
    )
    assert denied.returncode != 0 and "forbidden" in denied.stderr
    control_plane.kubectl(
        "create",
        "rolebinding",
        "reader",
        "--clusterrole=view",
        f"--serviceaccount={namespace}:reader",
        "-n",
        namespace,
    )
    eventually(
        lambda: (
            control_plane.kubectl(
                f"--kubeconfig={cfg}", "get", "pods", "-n", namespace, check=False
            ).returncode
            == 0
        ),
        timeout=30,
        what="RoleBinding to take effect",
    )


def test_admin_token_authenticates(control_plane: ControlPlane) -> None:
    import ssl
    import urllib.request

    from harness.controlplane import http_get

    ctx = ssl.create_default_context(cafile=str(control_plane.cert_files.ca_cert))
    req = urllib.request.Request(
        f"{control_plane.server}/api/v1/namespaces",
        headers={"Authorization": f"Bearer {control_plane.admin_token}"},
    )
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ctx)
    )
    with opener.open(req, timeout=10) as resp:
        assert resp.status == 200
        assert "kube-system" in resp.read().decode()
    status, body = http_get(f"{control_plane.server}/api/v1/namespaces", ctx)
    assert status == 403 and "system:anonymous" in body, "a request without credentials got in"


def test_garbage_collector_deletes_dependents(control_plane: ControlPlane, namespace: str) -> None:
    control_plane.kubectl("create", "configmap", "owner", "-n", namespace)
    uid = control_plane.kubectl(
        "get", "configmap", "owner", "-n", namespace, "-o", "jsonpath={.metadata.uid}"
    ).stdout
    child = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "child",
            "namespace": namespace,
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}
            ],
        },
    }
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(child))
    control_plane.kubectl("delete", "configmap", "owner", "-n", namespace)
    eventually(
        lambda: (
            control_plane.kubectl(
                "get", "configmap", "child", "-n", namespace, check=False
            ).returncode
            != 0
        ),
        timeout=30,
        what="garbage collection of the child ConfigMap",
    )


def test_scheduler_binds_a_pod_to_a_node(control_plane: ControlPlane, namespace: str) -> None:
    node_name = f"node-{namespace}"[:63]
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": node_name},
        "status": {
            "capacity": {"cpu": "4", "memory": "8Gi", "pods": "10"},
            "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "10"},
        },
    }
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": namespace},
        "spec": {
            "containers": [{"name": "c", "image": "example.invalid/none"}],
            "tolerations": [{"operator": "Exists"}],
            "nodeSelector": {"kubernetes.io/hostname": node_name},
        },
    }
    control_plane.kubectl("create", "-f", "-", input=json.dumps(node))
    try:
        control_plane.kubectl("label", "node", node_name, f"kubernetes.io/hostname={node_name}")
        control_plane.kubectl("create", "-f", "-", input=json.dumps(pod))
        eventually(
            lambda: (
                control_plane.kubectl(
                    "get", "pod", "p", "-n", namespace, "-o", "jsonpath={.spec.nodeName}"
                ).stdout
                == node_name
            ),
            timeout=30,
            what="the scheduler binding the pod",
        )
    finally:
        control_plane.kubectl("delete", "node", node_name, "--wait=false", check=False)


def test_teardown_leaves_no_process_and_no_files(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    """A second, private control plane: after stop() every component is gone, data removed."""
    cp = start_control_plane(bin_dir=control_plane.bin_dir, base_dir=tmp_path / "cp")
    try:
        pids = [p.pid for p in cp.processes.values()]
        assert sorted(cp.processes) == sorted(
            ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"]
        )
        assert all(cp.alive().values())
        assert cp.server != control_plane.server
    finally:
        cp.stop()
    assert cp.leftover_groups() == []
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists(), f"process {pid} still exists"
    cp.remove_files(keep_logs=True)
    assert sorted(p.name for p in (tmp_path / "cp").iterdir()) == ["logs"]
    assert (tmp_path / "cp" / "logs" / "kube-apiserver.log").stat().st_size > 0
    cp.remove_files(keep_logs=False)
    assert not (tmp_path / "cp").exists()


def test_start_survives_a_port_taken_after_it_was_chosen(
    control_plane: ControlPlane, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process binds the apiserver's port first (a race no real part provides on
    demand, so the port chooser is made to hand out a busy port once)."""
    from harness import procs

    real_free_port = procs.free_port
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        handed_out: list[int] = []

        def chooser() -> int:
            port = real_free_port() if handed_out else int(busy.getsockname()[1])
            handed_out.append(port)
            return port

        monkeypatch.setattr(procs, "free_port", chooser)
        cp = start_control_plane(bin_dir=control_plane.bin_dir, base_dir=tmp_path / "cp")
        try:
            assert cp.server != f"https://127.0.0.1:{busy.getsockname()[1]}"
            assert cp.kubectl("get", "--raw", "/readyz").stdout == "ok"
            assert len(handed_out) == 6, "expected one failed start (3 ports) and a second one"
        finally:
            cp.stop()
            cp.remove_files(keep_logs=False)
