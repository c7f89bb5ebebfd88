"""FineTuneJobs queued through the real Kueue (its manager as a host process, its CRDs and
webhooks from its release) on kwok GPU nodes: whole gangs admitted one at a time within a
ClusterQueue's quota, priority preemption that re-queues the preempted job, and a queue that
does not exist or is stopped named in status.

The platform objects are examples/kueue/gpu-queue.yaml (docs/queueing.md), renamed per module.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from harness import ControlPlane, eventually
from harness.kueue import Kueue
from kubetune_operator.api import constants as c
from kubetune_operator.reconcile import workload as wl
from tests.k8s.operator.cluster import Operator
from tests.k8s.queueing.world import (
    GPU,
    GpuPool,
    Jobs,
    apply,
    delete,
    namespace,
    phase_of,
    platform_objects,
)

pytestmark = pytest.mark.k8s

GANG = {"nodes": 2, "gpusPerNode": 4}


@dataclass
class World:
    cp: ControlPlane
    jobs: Jobs
    pool: GpuPool
    operator: Operator
    suffix: str
    workdir: Path

    @property
    def cluster_queue(self) -> str:
        return f"gpu-cluster-queue-{self.suffix}"

    def priority(self, name: str) -> dict[str, str]:
        return {wl.PRIORITY_CLASS_LABEL: f"{name}-{self.suffix}"}


@pytest.fixture(scope="module")
def world(
    control_plane: ControlPlane,
    crd_installed: str,
    kueue: Kueue,
    k8s_api: client.ApiClient,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[World]:
    """4 kwok nodes with 4 GPUs each (16 GPUs), a ClusterQueue of 8, a LocalQueue gpu-queue."""
    workdir = tmp_path_factory.mktemp("kueue-world")
    suffix = uuid.uuid4().hex[:5]
    spaces = namespace(control_plane, "kueue")
    ns = next(spaces)
    pool = GpuPool(control_plane, k8s_api, f"kq-{suffix}", workdir / "kwok.log")
    docs = platform_objects(suffix, pool.selector, [pool.toleration], {GPU: "8"})
    operator = Operator(control_plane, ns, workdir / "operator.log")
    jobs = Jobs(k8s_api, ns)
    try:
        pool.add(4, gpus=4)
        apply(control_plane, docs, ns, workdir)
        operator.start()
        yield World(control_plane, jobs, pool, operator, suffix, workdir)
    finally:
        control_plane.kubectl("delete", c.PLURAL, "--all", "-n", ns, "--wait=true", "--timeout=60s", check=False)  # fmt: skip
        operator.stop()
        delete(control_plane, docs, ns, workdir)
        pool.close()
        next(spaces, None)


def queued(jobs: Jobs, name: str, words: str) -> Any:
    """An `eventually` check: the status once the job is Queued saying `words`."""

    def check() -> dict[str, Any] | None:
        st = jobs.status(name)
        return st if st.get("phase") == "Queued" and words in (st.get("message") or "") else None

    return check


def workload_condition(jobs: Jobs, job: str, kind: str) -> Any:
    """An `eventually` check: condition `kind` of the job's Workload is True."""

    def check() -> bool:
        conds = ((jobs.workload(job) or {}).get("status") or {}).get("conditions") or []
        return any(x["type"] == kind and x["status"] == "True" for x in conds)

    return check


def test_a_cluster_queue_of_8_gpus_admits_one_2x4_gang_at_a_time(world: World) -> None:
    """Three 2x4-GPU jobs on 16 GPUs of nodes but 8 of quota: one admitted whole, the others
    Queued with Kueue's reason and no pod at all (so no part of a gang ever holds GPUs while
    the rest waits); as each finishes the next is admitted."""
    jobs, names = world.jobs, ["gang-a", "gang-b", "gang-c"]
    for name in names:
        jobs.create(name, queue={"name": "gpu-queue"}, resources=GANG)
    holding_at_once: set[int] = set()
    finished: list[str] = []

    def running() -> list[str] | None:
        holding_at_once.add(sum(jobs.holding(n) > 0 for n in names))
        now = [n for n in names if n not in finished and jobs.status(n).get("phase") == "Running"]
        return now or None

    while len(finished) < len(names):
        now = eventually(running, 90, "one gang admitted and running", world.operator.log)
        assert len(now) == 1, f"more than one 8-GPU gang runs on 8 GPUs of quota: {now}"
        current = now[0]
        for other in [n for n in names if n not in finished and n != current]:
            st = eventually(queued(jobs, other, "insufficient"), 30, f"{other} Queued")
            assert "nvidia.com/gpu" in st["message"], st["message"]
            assert jobs.pods(other) == [], f"{other} has pods while queued"
            cond = jobs.condition(other, "Queued")
            assert cond and cond["status"] == "True" and cond["reason"] == "Pending", cond
        admitted = jobs.condition(current, "Admitted")
        assert admitted and admitted["status"] == "True", admitted
        assert world.cluster_queue in admitted["message"]
        assert jobs.holding(current) == GANG["nodes"]
        for pod in jobs.live_pods(current):
            # Kueue's admission put the flavor's node labels and toleration on the workers.
            assert pod["spec"]["nodeSelector"] == world.pool.selector, pod["spec"]
            assert world.pool.toleration in pod["spec"]["tolerations"]
            assert pod["spec"]["nodeName"] in world.pool.nodes
        eventually(workload_condition(jobs, current, "PodsReady"), 30, "PodsReady")
        jobs.complete(current)
        eventually(phase_of(jobs, current, "Succeeded"), 60, f"{current} Succeeded")
        eventually(workload_condition(jobs, current, "Finished"), 30, "Workload Finished")
        finished.append(current)
    assert holding_at_once <= {0, 1}, "two gangs held GPUs at once on 8 GPUs of quota"


def test_a_higher_priority_job_preempts_and_the_preempted_job_is_queued_again(
    world: World,
) -> None:
    """production preempts research: research's workers are stopped, the preemption counts
    toward preemptionLimit (backoffLimit 0 is untouched), status names the preempting job,
    research waits in the queue and is admitted again when production is done."""
    jobs = world.jobs
    jobs.create(
        "research",
        labels=world.priority("research"),
        queue={"name": "gpu-queue"},
        resources=GANG,
        runPolicy={"backoffLimit": 0},
    )
    eventually(phase_of(jobs, "research", "Running"), 90, "research Running", world.operator.log)
    jobs.create(
        "production",
        labels=world.priority("production"),
        queue={"name": "gpu-queue"},
        resources=GANG,
    )
    st = eventually(
        queued(jobs, "research", ""), 60, "research preempted and queued", world.operator.log
    )
    assert st["lastFailure"]["reason"] == "Preempted", st["lastFailure"]
    assert "preempted by FineTuneJob production" in st["lastFailure"]["message"]
    assert (st["attempt"], st["restarts"], st["preemptions"]) == (2, 1, 1), st
    preempted = jobs.condition("research", "Preempted")
    assert preempted and preempted["status"] == "True", preempted
    assert "FineTuneJob production" in preempted["message"]
    eventually(phase_of(jobs, "production", "Running"), 60, "production Running")
    assert jobs.live_pods("research") == []
    jobs.complete("production")
    eventually(phase_of(jobs, "production", "Succeeded"), 60, "production Succeeded")
    st = eventually(phase_of(jobs, "research", "Running"), 60, "research admitted again")
    assert st["attempt"] == 2 and st["restarts"] - st["preemptions"] == 0, st
    assert [p["metadata"]["name"] for p in jobs.live_pods("research")] == [
        "research-a2-0",
        "research-a2-1",
    ]
    jobs.complete("research")
    eventually(phase_of(jobs, "research", "Succeeded"), 60, "research Succeeded")


def test_a_queue_that_does_not_exist_or_is_stopped_is_named_in_status(world: World) -> None:
    """Kueue's label on the job names a LocalQueue that does not exist; another job's queue
    feeds a stopped ClusterQueue; a third's LocalQueue is stopped: each says so in status
    within seconds, in Kueue's words."""
    jobs, ns = world.jobs, world.jobs.ns
    jobs.create("lost", labels={c.QUEUE_NAME_LABEL: "no-such-queue"}, resources=GANG)
    eventually(queued(jobs, "lost", "LocalQueue no-such-queue doesn't exist"), 20, "lost named")
    workload = jobs.workload("lost")
    assert workload and workload["spec"]["queueName"] == "no-such-queue"

    stopped = f"stopped-{world.suffix}"
    held = [
        {
            "apiVersion": f"{wl.GROUP}/{wl.VERSION}",
            "kind": "ClusterQueue",
            "metadata": {"name": stopped},
            "spec": {"namespaceSelector": {}, "stopPolicy": "Hold", "resourceGroups": []},
        },
        {
            "apiVersion": f"{wl.GROUP}/{wl.VERSION}",
            "kind": "LocalQueue",
            "metadata": {"name": "held", "namespace": ns},
            "spec": {"clusterQueue": stopped},
        },
        {
            "apiVersion": f"{wl.GROUP}/{wl.VERSION}",
            "kind": "LocalQueue",
            "metadata": {"name": "paused", "namespace": ns},
            "spec": {"clusterQueue": world.cluster_queue, "stopPolicy": "Hold"},
        },
    ]
    apply(world.cp, held, ns, world.workdir)
    try:
        jobs.create("waiting", queue={"name": "held"}, resources=GANG)
        # Kueue calls a queue with a stopPolicy inactive.
        eventually(queued(jobs, "waiting", f"ClusterQueue {stopped} is inactive"), 20, "held")
        jobs.create("paused", queue={"name": "paused"}, resources=GANG)
        eventually(queued(jobs, "paused", "LocalQueue paused is inactive"), 20, "paused named")
        assert jobs.pods("waiting") == [] and jobs.pods("paused") == []
    finally:
        for name in ("lost", "waiting", "paused"):
            jobs.delete(name)
        delete(world.cp, held, ns, world.workdir)
