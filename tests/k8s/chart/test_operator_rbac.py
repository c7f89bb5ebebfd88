"""The operator, started exactly as the chart's Deployment starts it and holding only the
chart's RBAC (a token of its ServiceAccount), reconciles a job, a sweep and a schedule without a
single 403."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import ControlPlane
from harness.kueue import Kueue
from kubetune_operator.api import constants as c
from tests.k8s.chart.operator_run import (
    JOB,
    chart_installed,
    free_port,
    http_get,
    start_operator,
    stop_operator,
    wait_for,
)
from tests.k8s.queueing.world import apply, delete, platform_objects
from tests.unit.lifecycle_cases import valid_schedule, valid_sweep

pytestmark = pytest.mark.k8s

# An RBAC refusal in the operator's log, in the apiserver's words ('User "..." cannot create
# resource "pods" ...'), or Kopf's; or a rejected token. A 403 for another reason (e.g. writing
# into a namespace another test is deleting: "is being terminated") is no missing permission.
REFUSED = re.compile(r"cannot \w+ resource|Not enough permissions|Unauthorized")


@pytest.fixture(params=["cluster", "namespaced"])
def installed(
    request: pytest.FixtureRequest, control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> Iterator[dict[str, Any]]:
    """The chart installed (cluster-wide, or watching only the test namespace) with ports free
    on this machine."""
    sets = [f"rbac.scope={request.param}"]
    if request.param == "namespaced":
        sets.append(f"rbac.namespaces={{{namespace}}}")
    metrics_port, health_port = free_port(), free_port()
    sets += [
        f"metrics.port={metrics_port}",
        f"operator.extraArgs={{--liveness=http://127.0.0.1:{health_port}/healthz}}",
    ]
    with chart_installed(control_plane, namespace, tmp_path, *sets) as release:
        yield {**release, "scope": request.param, "metrics": metrics_port, "health": health_port}


def finish_workers(cp: ControlPlane, namespace: str, pods: list[dict[str, Any]]) -> None:
    """No kubelet here: play its part and report every worker exited 0."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for pod in pods:
        container = pod["spec"]["containers"][0]
        status = {"status": {"phase": "Succeeded", "containerStatuses": [{
            "name": container["name"], "image": container["image"], "imageID": "",
            "ready": False, "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": now}},
        }]}}  # fmt: skip
        cp.kubectl("patch", "pod", pod["metadata"]["name"], "-n", namespace, "--subresource=status",
                   "--type=merge", "-p", json.dumps(status))  # fmt: skip


def worker_pods(cp: ControlPlane, namespace: str, job: str) -> list[dict[str, Any]]:
    """The job's worker pods."""
    out = cp.kubectl(
        "get", "pods", "-n", namespace, "-l", f"kubetune.dev/job-name={job}", "-o", "json"
    )
    return list(json.loads(out.stdout)["items"])


def test_operator_with_chart_rbac_reconciles_without_403(
    control_plane: ControlPlane, namespace: str, installed: dict[str, Any], tmp_path: Path
) -> None:
    cp = control_plane
    kubeconfig = cp.kubeconfig_for_service_account(
        namespace, installed["full"], tmp_path / "sa-kubeconfig"
    )
    log = tmp_path / "operator.log"
    proc = start_operator(installed["deployment"], kubeconfig, log, pod_id="operator-0")
    try:
        name = "rbac-probe"
        cp.kubectl("apply", "-n", namespace, "-f", "-", input=JOB.format(name=name))
        pods = wait_for(
            "2 worker pods",
            lambda: len(p := worker_pods(cp, namespace, name)) == 2 and p,
            timeout=120,
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
                "get", kind, "-n", namespace, "-l", f"kubetune.dev/job-name={name}", "-o", "name"
            )
            assert listed.stdout.split(), f"operator created no {kind} for the job"

        # Both workers exit 0: the job Succeeds and, with ttlSecondsAfterFinished 0, is deleted.
        finish_workers(cp, namespace, pods)
        wait_for(
            "the job deleted after it succeeded (ttlSecondsAfterFinished: 0)",
            lambda: cp.kubectl("get", "ftj", name, "-n", namespace, check=False).returncode != 0,
        )

        # A sweep makes its trials (FineTuneJobs) and writes its status; a schedule on new
        # data makes its data-watch pod and writes its status.
        sweep, schedule = valid_sweep("rbac-sweep"), valid_schedule("rbac-sched")
        del schedule["spec"]["schedule"]
        schedule["spec"]["trigger"] = {"newData": {"prefix": "s3://data/in/"}}
        for parent in (sweep, schedule):
            cp.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(parent))
        trials = wait_for(
            "the sweep's first two trials",
            lambda: len(t := cp.kubectl("get", "ftj", "-n", namespace, "-o", "name", "-l",
                                        f"{c.LABEL_SWEEP}=rbac-sweep").stdout.split()) == 2 and t,
        )  # fmt: skip
        assert sorted(trials) == [f"finetunejob.kubetune.dev/rbac-sweep-t{i}" for i in (0, 1)]
        wait_for(
            "the sweep's status",
            lambda: cp.kubectl("get", "ftsweep", "rbac-sweep", "-n", namespace, "-o",
                               "jsonpath={.status.phase}").stdout == "Running",
        )  # fmt: skip
        wait_for(
            "the schedule's data-watch pod",
            lambda: cp.kubectl("get", "pod", "rbac-sched-w1", "-n", namespace,
                               check=False).returncode == 0,
        )  # fmt: skip
        wait_for(
            "the schedule's status",
            lambda: cp.kubectl("get", "ftsched", "rbac-sched", "-n", namespace, "-o",
                               "jsonpath={.status.observedGeneration}").stdout == "1",
        )  # fmt: skip

        code, _ = http_get(f"http://127.0.0.1:{installed['health']}/healthz")
        assert code == 200
        _, metrics = http_get(f"http://127.0.0.1:{installed['metrics']}/metrics")
        assert "kubetune_reconcile_duration_seconds_count" in metrics
    finally:
        stop_operator(proc)
    text = log.read_text()
    forbidden = [line for line in text.splitlines() if REFUSED.search(line)]
    # Namespaced, Kopf must not even try its cluster-wide scanning (it would retry 403s ~55 s).
    assert not forbidden, "permission errors:\n" + "\n".join(forbidden[:20])
    assert "kubetune operator started" in text


QUEUED_JOB = """
apiVersion: kubetune.dev/v1alpha1
kind: FineTuneJob
metadata:
  name: {name}
  labels:
    kueue.x-k8s.io/queue-name: gpu-queue
    kueue.x-k8s.io/priority-class: {priority}
spec:
  model: {{source: "file:///models/tiny"}}
  dataset: {{train: "file:///data/train.jsonl"}}
  method: {{type: lora, lora: {{r: 4, alpha: 8}}}}
  training: {{maxSteps: 5}}
  resources: {{nodes: 2, gpusPerNode: 0, requests: {{cpu: "1"}}}}
  output: {{uri: "file:///out/{name}"}}
"""


@pytest.mark.parametrize("installed", ["namespaced"], indirect=True)
def test_a_queued_job_runs_with_the_charts_rbac_without_403(
    control_plane: ControlPlane,
    namespace: str,
    installed: dict[str, Any],
    kueue: Kueue,
    tmp_path: Path,
) -> None:
    """Namespaced scope, the only cluster-wide grant being the Kueue reads: the operator
    creates the Workload with the job's WorkloadPriorityClass, reads the admitted flavor,
    and marks the Workload Finished, all without a refusal."""
    cp, suffix = control_plane, uuid.uuid4().hex[:5]
    platform = platform_objects(suffix, {}, [], {"cpu": "4"})
    apply(cp, platform, namespace, tmp_path)
    kubeconfig = cp.kubeconfig_for_service_account(namespace, installed["full"], tmp_path / "sa")
    log = tmp_path / "operator.log"
    proc = start_operator(installed["deployment"], kubeconfig, log, pod_id="operator-0")
    try:
        name = "queued-probe"
        job = QUEUED_JOB.format(name=name, priority=f"research-{suffix}")
        cp.kubectl("apply", "-n", namespace, "-f", "-", input=job)
        pods = wait_for(
            "2 worker pods after admission",
            lambda: len(p := worker_pods(cp, namespace, name)) == 2 and p,
            timeout=120,
        )
        workload = json.loads(cp.kubectl("get", "workloads", "-n", namespace, "-o", "json").stdout)[
            "items"
        ][0]
        assert workload["spec"]["priorityClassRef"]["name"] == f"research-{suffix}"
        finish_workers(cp, namespace, pods)
        wait_for(
            "the Workload Finished",
            lambda: "Finished=True" in cp.kubectl(
                "get", "workloads", "-n", namespace, "-o",
                'jsonpath={range .items[0].status.conditions[*]}{.type}={.status} {end}',
            ).stdout,
        )  # fmt: skip
    finally:
        stop_operator(proc)
        cp.kubectl("delete", "ftj", "--all", "-n", namespace, "--wait=true", check=False)
        delete(cp, platform, namespace, tmp_path)
    forbidden = [line for line in log.read_text().splitlines() if REFUSED.search(line)]
    assert not forbidden, "permission errors:\n" + "\n".join(forbidden[:20])
