"""Two operator replicas as the chart runs them: one works, one stands by, and the standby
takes over when the active one shuts down."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from harness import ControlPlane
from tests.k8s.chart.operator_run import (
    JOB,
    chart_installed,
    free_port,
    start_operator,
    stop_operator,
    wait_for,
)

pytestmark = pytest.mark.k8s


def peers(cp: ControlPlane, peering: str) -> dict[str, Any]:
    """The live peers recorded in the ClusterKopfPeering: identity -> {priority, lastseen, ...}."""
    out = cp.kubectl("get", "clusterkopfpeering", peering, "-o", "json")
    return dict(json.loads(out.stdout).get("status") or {})


def paused(log: str) -> bool:
    """Whether Kopf's last word on peering in this log was a pause (it also starts paused)."""
    return (
        log.rfind("Pausing operations") > log.rfind("Resuming operations")
        or "Resuming operations" not in log
    )


def worker_names(cp: ControlPlane, namespace: str, job: str) -> list[str]:
    """Names of the job's worker pods."""
    out = cp.kubectl(
        "get", "pods", "-n", namespace, "-l", f"kubetune.dev/job-name={job}", "-o", "name"
    )
    return out.stdout.split()


def has_workers(cp: ControlPlane, namespace: str, job: str) -> bool:
    return len(worker_names(cp, namespace, job)) == 2


def test_two_replicas_elect_one_and_fail_over(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    cp = control_plane
    with chart_installed(cp, namespace, tmp_path, "replicaCount=2") as release:
        assert release["deployment"]["spec"]["replicas"] == 2
        kubeconfig = cp.kubeconfig_for_service_account(
            namespace, release["full"], tmp_path / "sa-kubeconfig"
        )
        procs: dict[str, Any] = {}
        try:
            for pod_id in ("operator-a", "operator-b"):
                # Pods get their own IPs; on one machine each replica needs its own ports.
                liveness = f"--liveness=http://127.0.0.1:{free_port()}/healthz"
                deployment = json.loads(json.dumps(release["deployment"]))
                deployment["spec"]["template"]["spec"]["containers"][0]["args"].append(liveness)
                procs[pod_id] = start_operator(
                    deployment, kubeconfig, tmp_path / f"{pod_id}.log", pod_id,
                    extra_env={"KUBETUNE_METRICS_PORT": str(free_port())},
                )  # fmt: skip
            live = wait_for(
                "both replicas in the peering record",
                lambda: len(p := peers(cp, release["release"])) == 2 and p,
            )
            priorities = {pid: info["priority"] for pid, info in live.items()}
            assert len(set(priorities.values())) == 2, (
                f"equal priorities pause every replica: {priorities}"
            )
            active = max(priorities, key=lambda pid: priorities[pid])
            standby = min(priorities, key=lambda pid: priorities[pid])

            # Kopf pauses a replica that sees a peer with a higher priority.
            standby_log, active_log = tmp_path / f"{standby}.log", tmp_path / f"{active}.log"
            wait_for("the standby to pause", lambda: paused(standby_log.read_text()))
            wait_for("the active one to resume", lambda: not paused(active_log.read_text()))

            first = f"ha-{uuid.uuid4().hex[:4]}"
            cp.kubectl("apply", "-n", namespace, "-f", "-", input=JOB.format(name=first))
            wait_for("the first job's workers", lambda: has_workers(cp, namespace, first))
            # Kopf logs a handler's success after the pass that created the workers returns.
            wait_for("the active replica's log to name the job",
                     lambda: f'"name": "{first}"' in active_log.read_text())  # fmt: skip
            # Kopf's pause closes the standby's watch streams with a lag (an event or two may
            # still be handled); server-side apply and resourceVersion-guarded status writes make
            # that harmless: still one gang, one set of names.
            time.sleep(2)
            assert len(worker_names(cp, namespace, first)) == 2

            # The active replica leaves (rolling update, node drain): the standby takes over.
            stop_operator(procs.pop(active))
            second = f"ha-{uuid.uuid4().hex[:4]}"
            cp.kubectl("apply", "-n", namespace, "-f", "-", input=JOB.format(name=second))
            wait_for(
                "the standby to reconcile a new job", lambda: has_workers(cp, namespace, second)
            )
            assert not paused(standby_log.read_text())
            wait_for("the standby's log to name the job",
                     lambda: f'"name": "{second}"' in standby_log.read_text())  # fmt: skip
        finally:
            for proc in procs.values():
                stop_operator(proc)
    for log in tmp_path.glob("operator-*.log"):
        assert "Possibly conflicting operators with the same priority" not in log.read_text()
