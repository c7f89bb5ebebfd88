"""The Node object and its heartbeat (Lease + Ready condition), as a kubelet keeps them."""

from __future__ import annotations

import datetime
import platform
from collections.abc import Mapping
from typing import Any

from tests.e2e.nodeagent import podstatus

LEASE_NAMESPACE = "kube-node-lease"
LEASE_SECONDS = 40
CONTROLLER_TAINTS = ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")
KUBELET_VERSION = "v1.34.4"


def capacity(cpu: str, memory: str, pods: int) -> dict[str, str]:
    """Node capacity (also its allocatable)."""
    return {"cpu": cpu, "memory": memory, "pods": str(pods), "ephemeral-storage": "100Gi"}


def node_object(name: str, labels: Mapping[str, str]) -> dict[str, Any]:
    """The Node to create: well-known labels, no taints."""
    all_labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        **labels,
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": all_labels},
        "spec": {},
    }


def conditions(ready: bool) -> list[dict[str, Any]]:
    """The node conditions with a fresh heartbeat time."""
    t = podstatus.now()

    def cond(kind: str, status: bool, reason: str) -> dict[str, Any]:
        return {
            "type": kind,
            "status": "True" if status else "False",
            "reason": reason,
            "message": reason,
            "lastHeartbeatTime": t,
            "lastTransitionTime": t,
        }

    return [
        cond("MemoryPressure", False, "KubeletHasSufficientMemory"),
        cond("DiskPressure", False, "KubeletHasNoDiskPressure"),
        cond("PIDPressure", False, "KubeletHasSufficientPID"),
        cond("Ready", ready, "KubeletReady" if ready else "KubeletNotReady"),
    ]


def node_status(name: str, host_ip: str, cap: Mapping[str, str]) -> dict[str, Any]:
    """The full node status the agent reports at registration."""
    return {
        "capacity": dict(cap),
        "allocatable": dict(cap),
        "conditions": conditions(True),
        "addresses": [
            {"type": "InternalIP", "address": host_ip},
            {"type": "Hostname", "address": name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
        "nodeInfo": {
            "machineID": name,
            "systemUUID": name,
            "bootID": name,
            "kernelVersion": platform.release(),
            "osImage": "kubetune e2e node agent",
            "containerRuntimeVersion": "nodeagent://1",
            "kubeletVersion": KUBELET_VERSION,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": "amd64",
        },
    }


def without_controller_taints(taints: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """The taints minus not-ready/unreachable; None when there was nothing to remove."""
    taints = taints or []
    kept = [t for t in taints if t.get("key") not in CONTROLLER_TAINTS]
    return kept if len(kept) != len(taints) else None


def lease_object(name: str, node_uid: str) -> dict[str, Any]:
    """The node's Lease in kube-node-lease, owned by the Node."""
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": name,
            "namespace": LEASE_NAMESPACE,
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "Node", "name": name, "uid": node_uid}
            ],
        },
        "spec": {
            "holderIdentity": name,
            "leaseDurationSeconds": LEASE_SECONDS,
            "renewTime": micro_now(),
        },
    }


def micro_now() -> str:
    """Now as a MicroTime (Lease renewTime)."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
