"""The operator as a real process against the test apiserver, and a client that plays the
kubelet: helpers the operator tests share (their fixtures are in conftest.py).

There is no kubelet: the tests play its part by writing pod status (phase, exit codes,
reasons) through the pods/status subresource, exactly the fields a kubelet would write.
"""

from __future__ import annotations

import copy
import sys
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client

from harness import ControlPlane, eventually
from harness.controlplane import log_tail
from harness.procs import free_port, spawn, stop
from kubetune_operator.api import constants as c

NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))

BASE_SPEC: dict[str, Any] = {
    "model": {"source": "file:///models/tiny", "dtype": "float32"},
    "dataset": {"train": "file:///data/train.jsonl"},
    "method": {"type": "full"},
    "training": {"maxSteps": 10},
    "resources": {"nodes": 2, "gpusPerNode": 0},
    "output": {"uri": "file:///out/model"},
    "runPolicy": {"backoffLimit": 1},
}


class Operator:
    """`kopf run` of kubetune_operator.handlers for one namespace, killable and restartable."""

    def __init__(
        self, cp: ControlPlane, namespace: str, log: Path, env: dict[str, str] | None = None
    ) -> None:
        self.cp, self.namespace, self.log = cp, namespace, log
        self.extra_env = env or {}
        self.health_port = free_port()
        self.metrics_port = free_port()
        self.proc: Any = None

    def start(self, min_passes: int = 0) -> None:
        """Start and wait until the probe answers with at least `min_passes` passes done."""
        env = self.cp.env()
        env.update(KUBETUNE_METRICS_PORT=str(self.metrics_port), KUBETUNE_GRACE_SECONDS="5")
        env.update(self.extra_env)
        argv = [
            sys.executable, "-m", "kopf", "run", "--standalone", f"--namespace={self.namespace}",
            f"--liveness=http://127.0.0.1:{self.health_port}/healthz", "-m", "kubetune_operator.handlers",
        ]  # fmt: skip
        self.proc = spawn(argv, self.log, env)
        eventually(lambda: self.passes() >= min_passes, 60, "operator up", self.log)

    def passes(self) -> int:
        """Reconcile passes so far, from /metrics (-1 while the operator does not answer).

        The liveness probe is only checked to answer: Kopf caches probe results for a while.
        """
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(
                f"operator exited with {self.proc.returncode}:\n{log_tail(self.log, lines=40)}"
            )
        try:
            with NO_PROXY.open(f"http://127.0.0.1:{self.health_port}/healthz", timeout=2):
                pass
            text = self.metrics()
        except OSError:
            return -1
        for line in text.splitlines():
            if line.startswith("kubetune_reconcile_duration_seconds_count"):
                return int(float(line.split()[-1]))
        return -1

    def metrics(self) -> str:
        with NO_PROXY.open(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return str(r.read().decode())

    def kill(self) -> None:
        """SIGKILL, as a crash or an evicted operator pod would end."""
        import os
        import signal

        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc, grace_seconds=5)


class Cluster:
    """Typed-enough access to jobs and pods in one namespace."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.ns = namespace
        self.core = client.CoreV1Api(api)
        self.rbac = client.RbacAuthorizationV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.api = api

    def raw(self, obj: Any) -> Any:
        return self.api.sanitize_for_serialization(obj)

    def create_job(self, name: str, **spec_changes: Any) -> dict[str, Any]:
        spec = copy.deepcopy(BASE_SPEC)
        for key, value in spec_changes.items():
            spec[key] = {**spec.get(key, {}), **value} if isinstance(value, dict) else value
        body = {
            "apiVersion": c.API_VERSION,
            "kind": c.KIND,
            "metadata": {"name": name},
            "spec": spec,
        }
        created: Any = self.custom.create_namespaced_custom_object(
            c.GROUP, c.VERSION, self.ns, c.PLURAL, body
        )
        return dict(created)

    def job(self, name: str) -> dict[str, Any]:
        job: Any = self.custom.get_namespaced_custom_object(
            c.GROUP, c.VERSION, self.ns, c.PLURAL, name
        )
        return dict(job)

    def status(self, name: str) -> dict[str, Any]:
        return dict(self.job(name).get("status") or {})

    def patch_spec(self, name: str, patch: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(
            c.GROUP,
            c.VERSION,
            self.ns,
            c.PLURAL,
            name,
            {"spec": patch},
            _content_type="application/merge-patch+json",
        )

    def pods(self, job: str) -> list[dict[str, Any]]:
        items = self.core.list_namespaced_pod(self.ns, label_selector=f"{c.LABEL_JOB}={job}").items
        return sorted((self.raw(p) for p in items), key=lambda p: p["metadata"]["name"])

    def pod_names(self, job: str, live_only: bool = True) -> list[str]:
        return [
            p["metadata"]["name"]
            for p in self.pods(job)
            if not (live_only and p["metadata"].get("deletionTimestamp"))
        ]

    def set_pod(
        self, name: str, phase: str, exit_code: int | None = None, reason: str | None = None
    ) -> None:
        """Write what a kubelet would: phase, Ready, and the trainer container's state."""
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if phase == "Running":
            state: dict[str, Any] = {"running": {"startedAt": now}}
        elif phase in ("Succeeded", "Failed"):
            code = exit_code if exit_code is not None else (0 if phase == "Succeeded" else 1)
            state = {
                "terminated": {
                    "exitCode": code,
                    "reason": reason or ("Completed" if code == 0 else "Error"),
                    "startedAt": now,
                    "finishedAt": now,
                }
            }
        else:
            state = {"waiting": {"reason": "ContainerCreating"}}
        ready = "True" if phase == "Running" else "False"
        body = {
            "status": {
                "phase": phase,
                "conditions": [
                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                    {"type": "Ready", "status": ready, "lastTransitionTime": now},
                ],
                "containerStatuses": [
                    {
                        "name": "trainer",
                        "image": "kubetune/trainer:dev",
                        "imageID": "",
                        "ready": ready == "True",
                        "restartCount": 0,
                        "state": state,
                    }
                ],
            }
        }
        self.core.patch_namespaced_pod_status(name, self.ns, body)

    def set_gang(self, job: str, phase: str) -> None:
        for name in self.pod_names(job):
            self.set_pod(name, phase)
