"""Running the operator on this machine exactly as the chart's Deployment runs it in a pod."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness import ControlPlane, eventually
from harness.binaries import REPO_ROOT
from tests.k8s.chart.test_install import helm
from tests.unit.chart.helm import CHART

# A small CPU job: enough for the operator to render and create its whole gang.
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


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def container_command(deployment: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    """The operator container's argv and literal env, as the Deployment declares them."""
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    return [*container["command"], *container["args"]], env


def wait_for(what: str, check: Any, timeout: float = 60) -> Any:
    """Poll `check` until it returns something truthy (the shared poll-until helper, with the
    argument order and default these tests use)."""
    return eventually(check, timeout, what, poll=0.5)


def http_get(url: str) -> tuple[int, str]:
    """GET a loopback URL, never through a proxy."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=5) as resp:
        return resp.status, resp.read().decode()


@contextmanager
def chart_installed(
    cp: ControlPlane, namespace: str, tmp: Path, *sets: str
) -> Iterator[dict[str, Any]]:
    """helm install with `--set` values and a unique peering name; uninstalled afterwards."""
    release = f"kt-{uuid.uuid4().hex[:6]}"
    args = ["install", release, str(CHART), "-n", namespace, "--set", f"peering.name={release}"]
    for s in sets:
        args += ["--set", s]
    helm(cp, tmp, *args)
    full = f"{release}-kubetune"
    deployment = json.loads(
        cp.kubectl("get", "deployment", full, "-n", namespace, "-o", "json").stdout
    )
    try:
        yield {"release": release, "full": full, "deployment": deployment}
    finally:
        helm(cp, tmp, "uninstall", release, "-n", namespace, check=False)


def start_operator(
    deployment: dict[str, Any],
    kubeconfig: Path,
    log: Path,
    pod_id: str,
    extra_env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """The Deployment's command with its env, as pod `pod_id`, holding `kubeconfig`'s identity,
    running this checkout's operator (as the image built from it would), not whichever copy
    the Python environment has installed."""
    argv, env = container_command(deployment)
    env.update(
        PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        # This checkout's operator, whatever checkout the environment's install points at.
        PYTHONPATH=f"{REPO_ROOT / 'operator'}:{REPO_ROOT / 'trainer'}",
        KUBECONFIG=str(kubeconfig), POD_ID=pod_id, HOME=str(log.parent),
        NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost",
        **(extra_env or {}),
    )  # fmt: skip
    with log.open("w") as out:
        return subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop_operator(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Stop the operator's whole process group; SIGKILL if it does not exit in time."""
    try:
        os.killpg(proc.pid, sig)
        proc.wait(timeout=20)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
