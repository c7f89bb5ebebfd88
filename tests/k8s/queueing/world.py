"""What the queueing and gang-scheduling tests share: a pool of kwok GPU nodes, the platform
objects of examples/kueue/gpu-queue.yaml renamed for one test module, and job helpers.

The pool's nodes carry a label and a NoSchedule taint of their own, so only pods that are sent
there (by a ResourceFlavor, or the job's nodeSelector and toleration) land on them, and the
e2e node agents of other tests never meet these pods.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from bench._scale import kwok
from harness import ControlPlane, eventually
from harness.binaries import REPO_ROOT
from harness.procs import stop
from kubetune_operator.api import constants as c
from kubetune_operator.reconcile import workload as wl
from tests.k8s.operator.cluster import BASE_SPEC

POOL_KEY = "kubetune.dev/test-pool"
GPU = "nvidia.com/gpu"
PLATFORM = REPO_ROOT / "examples" / "kueue" / "gpu-queue.yaml"
COMPLETE = {"bench.kubetune.dev/complete": "true"}  # kwok's on-demand completion stage


class GpuPool:
    """kwok and its nodes: `gpus` nvidia.com/gpu each, labelled and tainted as pool `name`."""

    def __init__(self, cp: ControlPlane, api: client.ApiClient, name: str, log: Path) -> None:
        self.cp, self.core, self.name = cp, client.CoreV1Api(api), name
        self.nodes: list[str] = []
        self.proc = kwok.start(cp.bin_dir, cp.kubeconfig, log, cp.env())
        self.log = log

    @property
    def toleration(self) -> dict[str, Any]:
        return {"key": POOL_KEY, "operator": "Equal", "value": self.name, "effect": "NoSchedule"}

    @property
    def selector(self) -> dict[str, str]:
        return {POOL_KEY: self.name}

    def add(self, count: int, gpus: int) -> list[str]:
        """Add `count` Ready nodes; returns their names."""
        added = [f"{self.name}-{len(self.nodes) + i}" for i in range(count)]
        for node in added:
            resources = {"cpu": "32", "memory": "256Gi", "pods": "110", GPU: str(gpus)}
            self.core.create_node({  # type: ignore[arg-type]
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": node,
                    "annotations": {kwok.FAKE_NODE_ANNOTATION[0]: kwok.FAKE_NODE_ANNOTATION[1]},
                    "labels": {"kubernetes.io/hostname": node, "type": "kwok", POOL_KEY: self.name},
                },
                "spec": {"taints": [{k: v for k, v in self.toleration.items() if k != "operator"}]},
                "status": {"capacity": resources, "allocatable": resources},
            })  # fmt: skip
        self.nodes += added
        eventually(
            lambda: all(self._schedulable(n) for n in added), 60, "kwok nodes Ready", self.log
        )
        return added

    def _schedulable(self, node: str) -> bool:
        """Ready (kwok) and without the controller manager's not-ready taints."""
        if self.proc.poll() is not None:
            raise AssertionError(f"kwok exited with {self.proc.returncode}")
        body = self.core.read_node(node)
        ready = any(x.type == "Ready" and x.status == "True" for x in body.status.conditions or [])
        taints = [t.key for t in body.spec.taints or [] if t.key != POOL_KEY]
        return ready and not taints

    def close(self) -> None:
        for node in self.nodes:
            self.cp.kubectl(
                "delete", "node", node, "--ignore-not-found", "--wait=false", check=False
            )
        stop(self.proc)


def platform_objects(
    suffix: str,
    node_labels: dict[str, str],
    tolerations: list[dict[str, Any]],
    quota: dict[str, str],
) -> list[dict[str, Any]]:
    """examples/kueue/gpu-queue.yaml for one test module: cluster-scoped names get `suffix`,
    the flavor has `node_labels` and `tolerations`, `quota` overrides the ClusterQueue's
    nominal quotas by resource name."""
    out = []
    for doc in (d for d in yaml.safe_load_all(PLATFORM.read_text()) if d):
        kind, spec = doc["kind"], doc.get("spec") or {}
        if kind != "LocalQueue":
            doc["metadata"]["name"] += f"-{suffix}"
        if kind == "ResourceFlavor":
            spec["nodeLabels"] = node_labels
            spec["tolerations"] = tolerations
        if kind == "ClusterQueue":
            for group in spec["resourceGroups"]:
                for flavor in group["flavors"]:
                    flavor["name"] += f"-{suffix}"
                    for res in flavor["resources"]:
                        res["nominalQuota"] = quota.get(res["name"], res["nominalQuota"])
        if kind == "LocalQueue":
            spec["clusterQueue"] += f"-{suffix}"
        out.append(doc)
    return out


def apply(cp: ControlPlane, docs: list[dict[str, Any]], namespace: str, workdir: Path) -> None:
    path = workdir / f"objects-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    cp.kubectl("apply", "-n", namespace, "-f", str(path))


def delete(cp: ControlPlane, docs: list[dict[str, Any]], namespace: str, workdir: Path) -> None:
    """Delete objects (while Kueue runs: its finalizers hold them until it lets go)."""
    path = workdir / f"delete-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    cp.kubectl("delete", "-n", namespace, "-f", str(path), "--ignore-not-found", "--wait=true",
               "--timeout=60s", check=False)  # fmt: skip


class Jobs:
    """FineTuneJobs, their pods and Workloads in one namespace."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.ns = namespace
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.api = api

    def create(
        self, name: str, labels: dict[str, str] | None = None, **spec: Any
    ) -> dict[str, Any]:
        body_spec = copy.deepcopy(BASE_SPEC)
        for key, value in spec.items():
            body_spec[key] = (
                {**body_spec.get(key, {}), **value} if isinstance(value, dict) else value
            )
        body = {
            "apiVersion": c.API_VERSION,
            "kind": c.KIND,
            "metadata": {"name": name, "labels": labels or {}},
            "spec": body_spec,
        }
        created: Any = self.custom.create_namespaced_custom_object(
            c.GROUP, c.VERSION, self.ns, c.PLURAL, body
        )
        return dict(created)

    def status(self, name: str) -> dict[str, Any]:
        job: Any = self.custom.get_namespaced_custom_object(
            c.GROUP, c.VERSION, self.ns, c.PLURAL, name
        )
        return dict(job.get("status") or {})

    def condition(self, name: str, kind: str) -> dict[str, Any] | None:
        for cond in self.status(name).get("conditions") or []:
            if cond["type"] == kind:
                return dict(cond)
        return None

    def pods(self, job: str) -> list[dict[str, Any]]:
        items = self.core.list_namespaced_pod(self.ns, label_selector=f"{c.LABEL_JOB}={job}").items
        return sorted(
            (self.api.sanitize_for_serialization(p) for p in items),
            key=lambda p: p["metadata"]["name"],
        )

    def live_pods(self, job: str) -> list[dict[str, Any]]:
        return [p for p in self.pods(job) if not p["metadata"].get("deletionTimestamp")]

    def bound(self, job: str) -> int:
        """Workers of the job a scheduler has bound to a node."""
        return sum(bool(p["spec"].get("nodeName")) for p in self.live_pods(job))

    def holding(self, job: str) -> int:
        """Workers of the job bound to a node and not finished: they hold its GPUs."""
        return sum(
            bool(p["spec"].get("nodeName"))
            and p.get("status", {}).get("phase") not in ("Succeeded", "Failed")
            for p in self.pods(job)
        )

    def workload(self, job: str) -> dict[str, Any] | None:
        items: Any = self.custom.list_namespaced_custom_object(
            wl.GROUP, wl.VERSION, self.ns, wl.PLURAL, label_selector=f"{c.LABEL_JOB}={job}"
        )
        found = items.get("items") or []
        return dict(found[0]) if found else None

    def complete(self, job: str) -> None:
        """Let the job's running workers exit 0 (kwok's on-demand completion stage)."""
        for pod in self.live_pods(job):
            self.core.patch_namespaced_pod(
                pod["metadata"]["name"], self.ns, {"metadata": {"annotations": COMPLETE}}
            )

    def delete(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(c.GROUP, c.VERSION, self.ns, c.PLURAL, name)


def phase_of(jobs: Jobs, name: str, phase: str) -> Any:
    """An `eventually` check: the status once its phase is `phase`."""

    def check() -> dict[str, Any] | None:
        st = jobs.status(name)
        if st.get("phase") == "Failed" and phase != "Failed":
            raise AssertionError(f"job {name} failed: {st.get('message')}")
        return st if st.get("phase") == phase else None

    return check


def namespace(cp: ControlPlane, prefix: str) -> Iterator[str]:
    """A namespace for one test module (deleted without waiting at the end)."""
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    cp.kubectl("create", "namespace", name)
    eventually(
        lambda: cp.kubectl("get", "sa", "default", "-n", name, check=False).returncode == 0,
        30,
        "default ServiceAccount",
    )
    try:
        yield name
    finally:
        cp.kubectl("delete", "namespace", name, "--wait=false", check=False)
