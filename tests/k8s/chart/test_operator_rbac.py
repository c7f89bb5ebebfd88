"""The operator, started exactly as the chart's Deployment starts it and holding only the
chart's RBAC (a token of its ServiceAccount), reconciles a job without a single 403."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import ControlPlane
from tests.k8s.chart.test_install import helm
from tests.unit.chart.helm import CHART

pytestmark = pytest.mark.k8s

JOB = """
apiVersion: kubetune.dev/v1alpha1
kind: FineTuneJob
metadata:
  name: {name}
spec:
  model: {{source: "file:///models/tiny"}}
  dataset: {{train: "file:///data/train.jsonl"}}
  method: {{type: lora, lora: {{r: 4, alpha: 8}}}}
  training: {{maxSteps: 5}}
  resources: {{nodes: 2, gpusPerNode: 0}}
  output: {{uri: "file:///out/{name}"}}
  runPolicy: {{ttlSecondsAfterFinished: 0}}
"""


# A refused API call in the operator's log: HTTP 401/403 or Kubernetes' "Forbidden".
REFUSED = re.compile(r"(?<![\w.:-])40[13](?![\w-])|[Ff]orbidden|Unauthorized|Not enough permissions")


# Kopf's cluster-wide discovery, refused on purpose in namespaced mode: it lists namespaces and
# CRDs, retries for about a minute, then falls back to the namespaces it was given.
KOPF_CLUSTER_DISCOVERY = re.compile(
    r"GET \S+/(api/v1/namespaces|apis/apiextensions.k8s.io/v1/customresourcedefinitions) "
    r"|Not enough permissions to (list|watch for) (namespaces|resources)"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def container_command(deployment: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    """The operator container's argv and literal env, as the Deployment declares them."""
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    return [*container["command"], *container["args"]], env


def wait_for(what: str, check: Any, timeout: float = 60) -> Any:
    """Poll `check` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def http_get(url: str) -> tuple[int, str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=5) as resp:
        return resp.status, resp.read().decode()


@pytest.fixture(
    params=[
        "cluster",
        # Kopf retries its cluster-wide discovery for about a minute before it falls back to the
        # listed namespaces (see KOPF_CLUSTER_DISCOVERY), hence slow.
        pytest.param("namespaced", marks=pytest.mark.slow),
    ]
)
def installed(
    request: pytest.FixtureRequest, control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> Iterator[dict[str, Any]]:
    """The chart installed (cluster-wide, or watching only the test namespace) with ports free
    on this machine; uninstalled after."""
    scope_args = ["--set", f"rbac.scope={request.param}"]
    if request.param == "namespaced":
        scope_args += ["--set", f"rbac.namespaces={{{namespace}}}"]
    release = f"kt-{uuid.uuid4().hex[:6]}"
    metrics_port, health_port = free_port(), free_port()
    helm(control_plane, tmp_path, "install", release, str(CHART), "-n", namespace,
         "--set", f"peering.name={release}", "--set", f"metrics.port={metrics_port}",
         "--set", f"operator.extraArgs={{--liveness=http://127.0.0.1:{health_port}/healthz}}",
         *scope_args)  # fmt: skip
    full = f"{release}-kubetune"
    deployment = json.loads(
        control_plane.kubectl("get", "deployment", full, "-n", namespace, "-o", "json").stdout
    )
    try:
        yield {
            "scope": request.param,
            "full": full,
            "deployment": deployment,
            "metrics": metrics_port,
            "health": health_port,
        }
    finally:
        helm(control_plane, tmp_path, "uninstall", release, "-n", namespace, check=False)


def test_operator_with_chart_rbac_reconciles_without_403(
    control_plane: ControlPlane, namespace: str, installed: dict[str, Any], tmp_path: Path
) -> None:
    cp = control_plane
    kubeconfig = cp.kubeconfig_for_service_account(
        namespace, installed["full"], tmp_path / "sa-kubeconfig"
    )
    argv, env = container_command(installed["deployment"])
    env.update(
        PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        KUBECONFIG=str(kubeconfig), POD_ID="operator-under-test", KUBETUNE_OPERATOR_NAMESPACE=namespace,
        NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost", HOME=str(tmp_path),
    )  # fmt: skip
    log = tmp_path / "operator.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        name = "rbac-probe"
        cp.kubectl("apply", "-n", namespace, "-f", "-", input=JOB.format(name=name))
        selector = f"kubetune.dev/job-name={name}"

        def worker_pods() -> list[dict[str, Any]]:
            out = cp.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json")
            return list(json.loads(out.stdout)["items"])

        pods = wait_for(
            "worker pods", lambda: len(worker_pods()) == 2 and worker_pods(), timeout=120
        )
        phase = wait_for(
            "a status phase",
            lambda: (
                cp.kubectl(
                    "get", "ftj", name, "-n", namespace, "-o", "jsonpath={.status.phase}"
                ).stdout
            ),
        )
        assert phase in ("Pending", "Initializing", "Running")
        for kind in ("serviceaccount", "role", "rolebinding", "configmap", "service"):
            listed = cp.kubectl(
                "get", kind, "-n", namespace, "-l", selector, "-o", "name"
            ).stdout.split()
            assert listed, f"operator created no {kind} for the job"

        # No kubelet here: play its part and report both workers finished, so the operator
        # marks the job Succeeded and, with ttlSecondsAfterFinished 0, deletes it.
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        for pod in pods:
            container = pod["spec"]["containers"][0]["name"]
            status = {"status": {"phase": "Succeeded", "containerStatuses": [{
                "name": container, "image": pod["spec"]["containers"][0]["image"], "imageID": "",
                "ready": False, "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": now}},
            }]}}  # fmt: skip
            cp.kubectl("patch", "pod", pod["metadata"]["name"], "-n", namespace, "--subresource=status",
                       "--type=merge", "-p", json.dumps(status))  # fmt: skip
        wait_for(
            "the job deleted after it succeeded (ttlSecondsAfterFinished: 0)",
            lambda: cp.kubectl("get", "ftj", name, "-n", namespace, check=False).returncode != 0,
        )

        code, _ = http_get(f"http://127.0.0.1:{installed['health']}/healthz")
        assert code == 200
        _, metrics = http_get(f"http://127.0.0.1:{installed['metrics']}/metrics")
        assert "kubetune_reconcile_duration_seconds_count" in metrics
        # 404s are expected (the job is gone after its TTL); a refusal is not.
        denied = [
            line
            for line in metrics.splitlines()
            if line.startswith("kubetune_api_errors_total{")
            and ('code="403"' in line or 'code="401"' in line)
        ]
        assert not denied, f"API calls refused: {denied}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = log.read_text()
    forbidden = [line for line in text.splitlines() if REFUSED.search(line)]
    if installed["scope"] == "namespaced":
        # By design a namespaced install grants nothing cluster-wide; Kopf probes it and copes.
        forbidden = [line for line in forbidden if not KOPF_CLUSTER_DISCOVERY.search(line)]
    assert not forbidden, "permission errors:\n" + "\n".join(forbidden[:20])
    assert "kubetune operator started" in text
