"""Pure builders of the pod status the node agent reports, following the kubelet's rules for
restartPolicy Never: Pending while containers are being created, Running once they run,
Succeeded when all exited 0, Failed when all exited and one did not."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

RUNTIME = "nodeagent"


def now() -> str:
    """The current time as the API's RFC 3339 timestamp."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class ContainerState:
    """What the agent knows of one container."""

    name: str
    image: str
    pid: int | None = None
    started_at: str | None = None
    finished_at: str | None = None
    exit_code: int | None = None
    reason: str | None = None
    message: str = ""
    waiting_reason: str = "ContainerCreating"
    waiting_message: str = ""

    @property
    def running(self) -> bool:
        """Started and not yet finished."""
        return self.started_at is not None and self.exit_code is None

    @property
    def terminated(self) -> bool:
        """Exited (or never could start)."""
        return self.exit_code is not None


def exit_reason(exit_code: int, oom_killed: bool, start_error: bool) -> str:
    """The terminated.reason the kubelet reports for an exit."""
    if oom_killed:
        return "OOMKilled"
    if start_error:
        return "StartError"
    return "Completed" if exit_code == 0 else "Error"


def container_status(c: ContainerState) -> dict[str, Any]:
    """One entry of status.containerStatuses."""
    cid = f"{RUNTIME}://{c.pid}" if c.pid else ""
    state: dict[str, Any]
    if c.terminated:
        term: dict[str, Any] = {
            "exitCode": c.exit_code,
            "reason": c.reason,
            "startedAt": c.started_at or c.finished_at,
            "finishedAt": c.finished_at,
        }
        if c.message:
            term["message"] = c.message
        if cid:
            term["containerID"] = cid
        state = {"terminated": term}
    elif c.running:
        state = {"running": {"startedAt": c.started_at}}
    else:
        waiting = {"reason": c.waiting_reason}
        if c.waiting_message:
            waiting["message"] = c.waiting_message
        state = {"waiting": waiting}
    out = {
        "name": c.name,
        "image": c.image,
        "imageID": "",
        "ready": c.running,
        "started": c.running,
        "restartCount": 0,
        "state": state,
    }
    if cid:
        out["containerID"] = cid
    return out


def phase(containers: list[ContainerState], init_failed: bool) -> str:
    """Pod phase under restartPolicy Never."""
    if init_failed:
        return "Failed"
    if containers and all(c.terminated for c in containers):
        return "Succeeded" if all(c.exit_code == 0 for c in containers) else "Failed"
    if any(c.started_at for c in containers):
        return "Running"
    return "Pending"


def _condition(kind: str, ok: bool, reason: str = "") -> dict[str, Any]:
    """A pod condition entry."""
    cond = {"type": kind, "status": "True" if ok else "False", "lastTransitionTime": now()}
    if reason and not ok:
        cond["reason"] = reason
    return cond


def pod_status(
    pod_ip: str,
    host_ip: str,
    start_time: str,
    init: list[ContainerState],
    containers: list[ContainerState],
) -> dict[str, Any]:
    """The whole status the agent patches onto the pod."""
    init_failed = any(c.terminated and c.exit_code != 0 for c in init)
    initialized = all(c.terminated and c.exit_code == 0 for c in init)
    p = phase(containers, init_failed)
    ready = p == "Running" and all(c.running for c in containers)
    status: dict[str, Any] = {
        "phase": p,
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "startTime": start_time,
        "conditions": [
            _condition("PodReadyToStartContainers", True),
            _condition("Initialized", initialized, "ContainersNotInitialized"),
            _condition("ContainersReady", ready, "ContainersNotReady"),
            _condition("Ready", ready, "ContainersNotReady"),
        ],
        "containerStatuses": [container_status(c) for c in containers],
    }
    if init:
        status["initContainerStatuses"] = [container_status(c) for c in init]
    return status
