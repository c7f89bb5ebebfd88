"""Gang scheduling with the real schedulers, on kwok GPU nodes: the scheduler-plugins
scheduler (Coscheduling) and Volcano's vc-scheduler, each a host process beside the control
plane's kube-scheduler, with the CRDs of their releases.

A job with spec.resources.gang gets a PodGroup (minMember = its workers) owned by it; the
workers carry the group's label or annotation and go to the gang scheduler. On a pool with
room for 3 of 4 workers no worker is bound; once room frees, all 4 are bound together.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from harness import ControlPlane, eventually
from harness.gang import (
    PERMIT_WAITING_SECONDS,
    VOLCANO_SCHEDULER,
    Scheduler,
    install_volcano_crds,
    start_coscheduling,
    start_volcano,
)
from kubetune_operator.api import constants as c
from kubetune_operator.reconcile import gang
from tests.k8s.operator.cluster import Operator
from tests.k8s.queueing.world import GPU, GpuPool, Jobs, namespace, phase_of

pytestmark = pytest.mark.k8s

WORKERS = 4


@dataclass
class World:
    cp: ControlPlane
    api: client.ApiClient
    jobs: Jobs
    pool: GpuPool
    operator: Operator
    coscheduling: Scheduler
    workdir: Path

    def pod_group(self, scheduler: str, job: str) -> dict[str, Any]:
        group, version = gang.APIS[scheduler]
        body: Any = client.CustomObjectsApi(self.api).get_namespaced_custom_object(
            group, version, self.jobs.ns, "podgroups", f"{job}-gang"
        )
        return dict(body)

    def gang_job(self, name: str, **gang_spec: Any) -> dict[str, Any]:
        """A job of WORKERS workers with one GPU each, on the pool, gang-scheduled."""
        return self.jobs.create(
            name,
            resources={
                "nodes": WORKERS,
                "gpusPerNode": 1,
                "nodeSelector": self.pool.selector,
                "tolerations": [self.pool.toleration],
                "gang": gang_spec,
            },
        )

    def blocker(self, node: str) -> str:
        """A pod holding the one GPU of `node` (placed directly, as a running job would)."""
        name = f"blocker-{uuid.uuid4().hex[:5]}"
        self.jobs.core.create_namespaced_pod(
            self.jobs.ns,
            {  # type: ignore[arg-type]
                "metadata": {"name": name},
                "spec": {
                    "nodeName": node,
                    "tolerations": [self.pool.toleration],
                    "containers": [
                        {
                            "name": "gpu",
                            "image": "registry.invalid/blocker",
                            "resources": {"requests": {GPU: "1"}, "limits": {GPU: "1"}},
                        }
                    ],
                },
            },
        )
        eventually(
            lambda: (
                self.jobs.core.read_namespaced_pod(name, self.jobs.ns).status.phase == "Running"
            ),
            30,
            "blocker running",
        )
        return name


@pytest.fixture(scope="module")
def world(
    control_plane: ControlPlane,
    crd_installed: str,
    k8s_api: client.ApiClient,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[World]:
    """4 kwok nodes with one GPU each, the coscheduling scheduler, Volcano's CRDs, the operator
    (started after the CRDs, so it finds their APIs)."""
    workdir = tmp_path_factory.mktemp("gang-world")
    spaces = namespace(control_plane, "gang")
    ns = next(spaces)
    pool = GpuPool(control_plane, k8s_api, f"gang-{uuid.uuid4().hex[:5]}", workdir / "kwok.log")
    coscheduling = start_coscheduling(control_plane, workdir)
    operator = Operator(control_plane, ns, workdir / "operator.log")
    try:
        pool.add(WORKERS, gpus=1)
        install_volcano_crds(control_plane)
        operator.start()
        yield World(
            control_plane, k8s_api, Jobs(k8s_api, ns), pool, operator, coscheduling, workdir
        )
    finally:
        operator.stop()
        coscheduling.stop()
        pool.close()
        next(spaces, None)


def watch_bound(jobs: Jobs, job: str, seconds: float) -> set[int]:
    """How many workers were bound at each look over `seconds`."""
    seen, end = set(), time.monotonic() + seconds
    while time.monotonic() < end:
        seen.add(jobs.bound(job))
        time.sleep(0.1)
    return seen


def room_for_three_then_four(world: World, job: str, scheduler: Scheduler) -> None:
    """With one of the 4 GPUs held, the 4-worker gang binds no pod (the scheduler has tried
    and said why); once it is free, all 4 bind together."""
    jobs = world.jobs
    blocker = world.blocker(world.pool.nodes[-1])
    kind = "volcano" if scheduler.name == VOLCANO_SCHEDULER else "coscheduling"
    world.gang_job(job, scheduler=kind)
    pods = eventually(
        lambda: len(jobs.live_pods(job)) == WORKERS and jobs.live_pods(job), 30, "workers"
    )
    assert {p["spec"]["schedulerName"] for p in pods} == {scheduler.name}
    st = eventually(
        lambda: (s := jobs.status(job)).get("message", "").count("the scheduler says") and s,
        60,
        "status saying the gang waits, in the scheduler's words",
        world.operator.log,
    )
    assert st["phase"] == "Pending" and "waiting for the gang" in st["message"], st
    assert f"all {WORKERS} workers together or none (0/{WORKERS} bound)" in st["message"]
    seen = watch_bound(jobs, job, 2 * PERMIT_WAITING_SECONDS + 2)
    assert seen == {0}, f"with room for 3 of 4, workers were bound: {sorted(seen)}"
    assert scheduler.alive(), scheduler.log_tail()

    jobs.core.delete_namespaced_pod(blocker, jobs.ns, grace_period_seconds=0)
    counts: list[int] = []

    def all_bound() -> bool:
        counts.append(jobs.bound(job))
        return counts[-1] == WORKERS

    eventually(all_bound, 120, "all 4 workers bound", scheduler.log, poll=0.05)
    # The scheduler writes one binding per pod, so a look may fall between two of the writes
    # of the same decision; a gang bound piecemeal would instead stop part way, or lose a pod.
    assert counts == sorted(counts), f"bound workers went down: {counts}"
    eventually(phase_of(jobs, job, "Running"), 60, f"{job} Running", world.operator.log)


def test_coscheduling_binds_a_4_worker_gang_all_together_or_not_at_all(world: World) -> None:
    jobs = world.jobs
    room_for_three_then_four(world, "cosched", world.coscheduling)
    group = world.pod_group("coscheduling", "cosched")
    assert group["spec"]["minMember"] == WORKERS
    assert group["spec"]["minResources"][GPU] == str(WORKERS)
    owner = group["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == (c.KIND, "cosched", True)
    for pod in jobs.live_pods("cosched"):
        assert pod["metadata"]["labels"][gang.COSCHEDULING_LABEL] == "cosched-gang"
    jobs.delete("cosched")
    eventually(lambda: not _exists(world, "coscheduling", "cosched"), 60, "PodGroup collected")


def _exists(world: World, scheduler: str, job: str) -> bool:
    try:
        world.pod_group(scheduler, job)
    except client.ApiException as err:
        if err.status == 404:
            return False
        raise
    return True


def test_volcano_accepts_the_pod_group_with_the_fields_kubetune_sets(world: World) -> None:
    """Volcano's own CRD accepts the PodGroup: minMember, queue and minResources as set; the
    workers carry Volcano's group annotation and go to the volcano scheduler."""
    jobs = world.jobs
    world.jobs.create(
        "vc-fields",
        resources={
            "nodes": WORKERS,
            "gpusPerNode": 1,
            "requests": {"cpu": "2", "memory": "8Gi"},
            "nodeSelector": world.pool.selector,
            "tolerations": [world.pool.toleration],
            "gang": {"scheduler": "volcano", "volcanoQueue": "research"},
        },
    )
    pods = eventually(lambda: len(jobs.live_pods("vc-fields")) == WORKERS and jobs.live_pods("vc-fields"), 30, "workers")  # fmt: skip
    group = world.pod_group("volcano", "vc-fields")
    assert group["spec"]["minMember"] == WORKERS
    assert group["spec"]["queue"] == "research"
    assert group["spec"]["minResources"] == {"cpu": "8", "memory": "34359738368", GPU: "4"}
    assert group["metadata"]["ownerReferences"][0]["name"] == "vc-fields"
    for pod in pods:
        assert pod["metadata"]["annotations"][gang.VOLCANO_ANNOTATION] == "vc-fields-gang"
        assert pod["spec"]["schedulerName"] == VOLCANO_SCHEDULER
    jobs.delete("vc-fields")
    eventually(lambda: not _exists(world, "volcano", "vc-fields"), 60, "PodGroup collected")


def test_vc_scheduler_binds_a_4_worker_gang_all_together_or_not_at_all(world: World) -> None:
    scheduler = start_volcano(world.cp, world.workdir / "volcano")
    try:
        world.cp.kubectl("apply", "-f", "-", input=DEFAULT_QUEUE)
        room_for_three_then_four(world, "vc", scheduler)
    finally:
        scheduler.stop()
        world.jobs.delete("vc")


DEFAULT_QUEUE = """\
apiVersion: scheduling.volcano.sh/v1beta1
kind: Queue
metadata:
  name: default
spec:
  weight: 1
  reclaimable: true
"""
