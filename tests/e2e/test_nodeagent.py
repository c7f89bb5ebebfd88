"""The node agent against the real control plane: pods scheduled to its Node run as local
processes with their env, volumes, names, credentials, exit codes and deletion semantics."""

from __future__ import annotations

import signal
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.e2e.nodeagent import NodeAgent
from tests.e2e.nodeagent.agent import leftover_mounts

TERMINAL = ("Succeeded", "Failed")


def pod_manifest(name: str, script: str, **spec: Any) -> dict[str, Any]:
    """A one-container pod running `python -c script` (the scheduler picks the node)."""
    container = {
        "name": "main",
        "image": "kubetune/trainer:test",
        "command": ["python", "-c", textwrap.dedent(script)],
    }
    container.update(spec.pop("container", {}))
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": spec.pop("labels", {"app": name})},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 10,
            "containers": [container],
            **spec,
        },
    }


def wait_pod(
    core: Any,
    ns: str,
    name: str,
    done: Callable[[dict[str, Any]], bool],
    agent: NodeAgent,
    timeout: float = 45,
) -> dict[str, Any]:
    """Poll the pod until `done(pod)`; the failure message carries the agent's view and logs."""
    deadline = time.monotonic() + timeout
    pod: dict[str, Any] = {}
    while time.monotonic() < deadline:
        pod = core.api_client.sanitize_for_serialization(core.read_namespaced_pod(name, ns))
        if done(pod):
            return pod
        time.sleep(0.2)
    raise AssertionError(
        f"pod {ns}/{name} not as expected after {timeout}s: status={pod.get('status')}\n"
        f"agent={agent.describe()}\nlogs:\n{agent.logs(ns, name)}"
    )


def phase_in(*phases: str) -> Callable[[dict[str, Any]], bool]:
    """Predicate: the pod reached one of `phases`."""
    return lambda pod: pod.get("status", {}).get("phase") in phases


def terminated(pod: dict[str, Any]) -> dict[str, Any]:
    """The first container's terminated state."""
    return pod["status"]["containerStatuses"][0]["state"]["terminated"]


@pytest.fixture
def core(k8s_api: client.ApiClient) -> client.CoreV1Api:
    """CoreV1Api on the test kubeconfig."""
    return client.CoreV1Api(k8s_api)


@pytest.mark.e2e
def test_node_registered_ready_without_taints(node_agent: NodeAgent, core: Any) -> None:
    """The Node is Ready with the configured capacity, untainted, and its Lease is held."""
    node = core.read_node("e2e-node")
    ready = {c.type: c.status for c in node.status.conditions}["Ready"]
    assert ready == "True"
    assert node.status.capacity["cpu"] == "8" and node.status.capacity["memory"] == "16Gi"
    assert not [t for t in node.spec.taints or [] if t.key.startswith("node.kubernetes.io/")]
    lease: Any = client.CoordinationV1Api(core.api_client).read_namespaced_lease(
        "e2e-node", "kube-node-lease"
    )
    assert lease.spec.holder_identity == "e2e-node"


ENV_SCRIPT = """
    import os, pathlib
    e = os.environ
    checks = {
        "POD_NAME": "envpod", "POD_NS": e["EXPECT_NS"], "APP": "demo", "NODE": "e2e-node",
        "SA": "default", "TOKEN": "s3cret", "LEVEL": "debug", "CFG_MODE": "fast",
        "GREETING": "hello envpod",
    }
    for k, v in checks.items():
        assert e.get(k) == v, (k, e.get(k), v)
    assert e["POD_IP"].startswith("127.") and e["POD_IP"] != "127.0.0.1", e["POD_IP"]
    assert len(e["POD_UID"]) == 36
    assert os.getcwd() == "/etc/kubetune", os.getcwd()
    assert pathlib.Path("/etc/kubetune/trainer.json").read_text() == '{"maxSteps": 5}'
    assert pathlib.Path("/var/lib/kubetune-scratch").is_dir()
    pathlib.Path("/var/lib/kubetune-scratch/x").write_text("scratch")
    pathlib.Path("/dev/shm/y").write_text("shm")
    assert pathlib.Path(os.environ["VIRTUAL_ENV_BIN"]).samefile(os.path.dirname(__import__("sys").executable))
    print("env and volumes ok", flush=True)
"""


@pytest.mark.e2e
def test_env_and_volumes_then_succeeded(node_agent: NodeAgent, core: Any, namespace: str) -> None:
    """fieldRef/secretKeyRef/configMapKeyRef/envFrom env, a ConfigMap volume as workingDir,
    emptyDirs; the script asserts what it sees and exits 0 -> Succeeded/Completed."""
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "creds"}, "stringData": {"token": "s3cret"}}
    )
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "settings"}, "data": {"LEVEL": "debug", "MODE": "fast"}}
    )
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "trainer"}, "data": {"trainer.json": '{"maxSteps": 5}'}}
    )

    def field(path: str) -> dict[str, Any]:
        return {"fieldRef": {"fieldPath": path}}

    env = [
        {"name": "EXPECT_NS", "value": namespace},
        {"name": "POD_NAME", "valueFrom": field("metadata.name")},
        {"name": "POD_NS", "valueFrom": field("metadata.namespace")},
        {"name": "POD_UID", "valueFrom": field("metadata.uid")},
        {"name": "APP", "valueFrom": field("metadata.labels['app']")},
        {"name": "POD_IP", "valueFrom": field("status.podIP")},
        {"name": "NODE", "valueFrom": field("spec.nodeName")},
        {"name": "SA", "valueFrom": field("spec.serviceAccountName")},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
        {"name": "LEVEL", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "LEVEL"}}},
        {"name": "GREETING", "value": "hello $(POD_NAME)"},
        {"name": "VIRTUAL_ENV_BIN", "value": str(Path.home() / ".cache/kubetune/venv/bin")},
    ]
    pod = pod_manifest(
        "envpod",
        ENV_SCRIPT,
        labels={"app": "demo"},
        container={
            "env": env,
            "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}],
            "workingDir": "/etc/kubetune",
            "volumeMounts": [
                {"name": "config", "mountPath": "/etc/kubetune", "readOnly": True},
                {"name": "scratch", "mountPath": "/var/lib/kubetune-scratch"},
                {"name": "shm", "mountPath": "/dev/shm"},
            ],
        },
        volumes=[
            {"name": "config", "configMap": {"name": "trainer"}},
            {"name": "scratch", "emptyDir": {}},
            {"name": "shm", "emptyDir": {"medium": "Memory"}},
        ],
    )
    core.create_namespaced_pod(namespace, pod)
    done = wait_pod(core, namespace, "envpod", phase_in(*TERMINAL), node_agent)
    assert done["status"]["phase"] == "Succeeded", node_agent.logs(namespace, "envpod")
    assert terminated(done)["exitCode"] == 0 and terminated(done)["reason"] == "Completed"
    assert "env and volumes ok" in node_agent.logs(namespace, "envpod")
    assert done["status"]["podIP"].startswith("127.0.")
    # The mounts lived only in the pod's namespace: nothing appeared on the host.
    assert not Path("/etc/kubetune").exists() and not Path("/var/lib/kubetune-scratch").exists()
    assert not (Path("/dev/shm") / "y").exists()


@pytest.mark.e2e
def test_exit_code_and_termination_message(
    node_agent: NodeAgent, core: Any, namespace: str
) -> None:
    """Exit 3 -> Failed, terminated exitCode 3 reason Error, message from /dev/termination-log."""
    script = """
        import sys
        open("/dev/termination-log", "w").write("bad record at line 7")
        sys.exit(3)
    """
    core.create_namespaced_pod(namespace, pod_manifest("fails", script))
    done = wait_pod(core, namespace, "fails", phase_in(*TERMINAL), node_agent)
    assert done["status"]["phase"] == "Failed"
    term = terminated(done)
    assert (term["exitCode"], term["reason"], term["message"]) == (
        3,
        "Error",
        "bad record at line 7",
    )
    assert not Path("/dev/termination-log").exists()


SERVER = """
    import os, socket
    s = socket.socket()
    s.bind((os.environ["POD_IP"], 7000))
    s.listen(1)
    conn, (peer, _) = s.accept()
    name = conn.recv(100).decode()
    expected = socket.gethostbyname("w1.peers")
    assert peer == expected, (peer, expected)
    conn.sendall(f"hello {name} from {socket.gethostname()}".encode())
    conn.close()
    print("served", name, peer, flush=True)
"""

CLIENT = """
    import os, socket, time
    for _ in range(150):
        try:
            addr = socket.gethostbyname("w0.peers." + os.environ["NS"] + ".svc.cluster.local")
            assert addr == socket.gethostbyname("w0.peers")
            c = socket.socket()
            c.bind((os.environ["POD_IP"], 0))
            c.connect((addr, 7000))
            break
        except OSError:
            time.sleep(0.2)
    assert addr.startswith("127.") and addr != os.environ["POD_IP"], addr
    c.sendall(socket.gethostname().encode())
    reply = c.recv(100).decode()
    assert reply == "hello w1 from w0", reply
    print("client got", reply, flush=True)
"""


@pytest.mark.e2e
def test_headless_service_names_and_pod_addresses(
    node_agent: NodeAgent, core: Any, namespace: str
) -> None:
    """Two pods under a headless Service reach each other by hostname.subdomain over TCP,
    each on its own 127.0.0.x address (the same port could be bound by both)."""
    core.create_namespaced_service(
        namespace,
        {
            "metadata": {"name": "peers"},
            "spec": {"clusterIP": "None", "selector": {"job": "peers"}, "ports": [{"port": 7000}]},
        },
    )
    env = [
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "NS", "value": namespace},
    ]
    for name, script in (("w0", SERVER), ("w1", CLIENT)):
        manifest = pod_manifest(
            name,
            script,
            labels={"job": "peers"},
            hostname=name,
            subdomain="peers",
            container={"env": env},
        )
        core.create_namespaced_pod(namespace, manifest)
    for name in ("w0", "w1"):
        done = wait_pod(core, namespace, name, phase_in(*TERMINAL), node_agent)
        assert done["status"]["phase"] == "Succeeded", node_agent.logs(namespace, name)
    assert "client got hello w1 from w0" in node_agent.logs(namespace, "w1")
    assert "served w1" in node_agent.logs(namespace, "w0")


INCLUSTER = """
    import json, os
    from kubernetes import client, config
    config.load_incluster_config()
    v1 = client.CoreV1Api()
    me = v1.read_namespaced_pod(os.environ["POD_NAME"], os.environ["NS"])
    assert me.spec.service_account_name == "reader"
    try:
        v1.list_namespaced_secret(os.environ["NS"])
    except client.ApiException as err:
        assert err.status == 403, err.status
        print("forbidden:", json.loads(err.body)["message"], flush=True)
    else:
        raise SystemExit("listing secrets should be forbidden")
"""


@pytest.mark.e2e
def test_in_cluster_credentials_have_the_pod_service_account_rbac(
    node_agent: NodeAgent, core: Any, namespace: str
) -> None:
    """load_incluster_config() works inside the pod and acts as its ServiceAccount: reading
    pods is allowed by its Role, listing secrets gets 403."""
    rbac: Any = client.RbacAuthorizationV1Api(core.api_client)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "reader"}})
    rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": "pod-reader"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}],
        },
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "pod-reader"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "pod-reader",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
        },
    )
    env = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]
    core.create_namespaced_pod(
        namespace,
        pod_manifest("incluster", INCLUSTER, serviceAccountName="reader", container={"env": env}),
    )
    done = wait_pod(core, namespace, "incluster", phase_in(*TERMINAL), node_agent, timeout=60)
    logs = node_agent.logs(namespace, "incluster")
    assert done["status"]["phase"] == "Succeeded", logs
    assert f'User "system:serviceaccount:{namespace}:reader" cannot list resource "secrets"' in logs


@pytest.mark.e2e
def test_deletion_sends_sigterm_then_pod_is_removed(
    node_agent: NodeAgent, core: Any, namespace: str
) -> None:
    """Deleting a running pod: its process gets SIGTERM, exits within the grace period, and
    the pod object is gone."""
    script = """
        import signal, sys, time
        def bye(*_):
            print("got SIGTERM", flush=True)
            sys.exit(0)
        signal.signal(signal.SIGTERM, bye)
        print("ready", flush=True)
        while True:
            time.sleep(0.1)
    """
    core.create_namespaced_pod(namespace, pod_manifest("victim", script))
    wait_pod(
        core,
        namespace,
        "victim",
        lambda p: "ready" in node_agent.logs(namespace, "victim"),
        node_agent,
    )
    started = time.monotonic()
    core.delete_namespaced_pod("victim", namespace, grace_period_seconds=20)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if not core.list_namespaced_pod(namespace, field_selector="metadata.name=victim").items:
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"pod still present: {node_agent.describe()}")
    assert time.monotonic() - started < 10, (
        "removed only after the grace period: SIGTERM was not honoured"
    )
    assert "got SIGTERM" in node_agent.logs(namespace, "victim")
    assert not node_agent.live_process_groups()


@pytest.mark.e2e
def test_deletion_escalates_to_sigkill_after_grace(
    node_agent: NodeAgent, core: Any, namespace: str
) -> None:
    """A process that ignores SIGTERM is killed after terminationGracePeriodSeconds."""
    script = """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ready", flush=True)
        time.sleep(600)
    """
    core.create_namespaced_pod(
        namespace, pod_manifest("stubborn", script, terminationGracePeriodSeconds=2)
    )
    wait_pod(
        core,
        namespace,
        "stubborn",
        lambda p: "ready" in node_agent.logs(namespace, "stubborn"),
        node_agent,
    )
    started = time.monotonic()
    core.delete_namespaced_pod("stubborn", namespace)
    while core.list_namespaced_pod(namespace, field_selector="metadata.name=stubborn").items:
        assert time.monotonic() - started < 15, node_agent.describe()
        time.sleep(0.2)
    assert 2 <= time.monotonic() - started < 10


@pytest.mark.e2e
def test_volume_over_the_checkout_keeps_the_image_visible(
    node_agent: NodeAgent, core: Any, namespace: str
) -> None:
    """An emptyDir on the folder holding the checkout (e.g. /tmp for a clone in /tmp) hides the
    host's other files there but not the code that stands in for the image."""
    from tests.e2e.nodeagent import runtime

    repo = Path(runtime.IMAGE_PATHS[0])
    covered = repo.parent
    if covered == Path("/"):
        pytest.skip("the checkout sits at the root of the file system")
    script = f"""
        import os, kubetune_trainer
        assert kubetune_trainer.__file__.startswith({str(repo)!r} + "/"), kubetune_trainer.__file__
        assert sorted(os.listdir({str(covered)!r})) == [{repo.name!r}], os.listdir({str(covered)!r})
    """
    pod = pod_manifest(
        "covered",
        script,
        container={"volumeMounts": [{"name": "scratch", "mountPath": str(covered)}]},
        volumes=[{"name": "scratch", "emptyDir": {}}],
    )
    core.create_namespaced_pod(namespace, pod)
    done = wait_pod(core, namespace, "covered", phase_in(*TERMINAL), node_agent)
    assert done["status"]["phase"] == "Succeeded", node_agent.logs(namespace, "covered")


@pytest.mark.e2e
def test_kill_pod_reports_oomkilled(node_agent: NodeAgent, core: Any, namespace: str) -> None:
    """Fault injection: kill_pod(..., reason="OOMKilled") -> Failed, exit 137, OOMKilled."""
    core.create_namespaced_pod(
        namespace, pod_manifest("hog", "import time; print('ready', flush=True); time.sleep(600)")
    )
    wait_pod(
        core, namespace, "hog", lambda p: "ready" in node_agent.logs(namespace, "hog"), node_agent
    )
    node_agent.kill_pod(namespace, "hog", signal.SIGKILL, reason="OOMKilled")
    done = wait_pod(core, namespace, "hog", phase_in(*TERMINAL), node_agent)
    assert done["status"]["phase"] == "Failed"
    assert (terminated(done)["exitCode"], terminated(done)["reason"]) == (137, "OOMKilled")


@pytest.mark.e2e
def test_memory_limit_is_enforced_as_a_real_oom_kill(
    node_agent: NodeAgent, core: Any, namespace: str
) -> None:
    """limits.memory puts the container in a memory cgroup: allocating past it gets the
    process OOM-killed by the kernel -> exit 137, reason OOMKilled."""
    script = """
        x = bytearray(400 * 1024 * 1024)
        x[::4096] = b"a" * len(x[::4096])
        print("survived", flush=True)
    """
    limits = {"resources": {"limits": {"memory": "96Mi"}}}
    core.create_namespaced_pod(namespace, pod_manifest("greedy", script, container=limits))
    done = wait_pod(core, namespace, "greedy", phase_in(*TERMINAL), node_agent)
    assert done["status"]["phase"] == "Failed", node_agent.logs(namespace, "greedy")
    assert (terminated(done)["exitCode"], terminated(done)["reason"]) == (137, "OOMKilled")
    assert "survived" not in node_agent.logs(namespace, "greedy")


@pytest.mark.e2e
def test_kill_node_stops_pods_and_heartbeats(
    node_agent_factory: Callable[..., NodeAgent], core: Any, namespace: str
) -> None:
    """Fault injection: kill_node() kills every pod process and the Lease stops being
    renewed; stop() afterwards leaves no process, mount or host folder behind."""
    agent = node_agent_factory(name="doomed-node", heartbeat_seconds=0.5)
    script = "import time; print('ready', flush=True); time.sleep(600)"
    manifest = pod_manifest(
        "sleeper",
        script,
        nodeName="doomed-node",
        container={"volumeMounts": [{"name": "c", "mountPath": "/etc/kubetune"}]},
    )
    manifest["spec"]["volumes"] = [{"name": "c", "emptyDir": {}}]
    core.create_namespaced_pod(namespace, manifest)
    wait_pod(
        core, namespace, "sleeper", lambda p: "ready" in agent.logs(namespace, "sleeper"), agent
    )
    assert agent.live_process_groups() and leftover_mounts(str(agent.state_dir))
    leases: Any = client.CoordinationV1Api(core.api_client)
    agent.kill_node()
    time.sleep(1.5)
    assert not agent.live_process_groups()
    renewed = leases.read_namespaced_lease("doomed-node", "kube-node-lease").spec.renew_time
    time.sleep(1.5)
    assert leases.read_namespaced_lease("doomed-node", "kube-node-lease").spec.renew_time == renewed
    pod = core.read_namespaced_pod("sleeper", namespace)
    assert pod.status.phase == "Running", "a dead node reports nothing"
    assert not leftover_mounts(str(agent.state_dir))
    assert not Path("/etc/kubetune").exists()
