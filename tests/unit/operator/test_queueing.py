"""A queued job through Kueue's Workload API, and gang scheduling: table tests of the
decision (what the job says and does for each verdict of Kueue), the Workload and PodGroup
builders, and the status patches the operator writes on a Workload.

The same behaviour against the real Kueue and schedulers: tests/k8s/queueing.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kubetune_operator.api.spec import FineTuneJob
from kubetune_operator.reconcile import workload as wl
from kubetune_operator.reconcile.gang import times
from kubetune_operator.reconcile.parse import InvalidSpec, parse_job
from kubetune_operator.reconcile.plan import OperatorSettings, resolve
from kubetune_operator.reconcile.policies.kueue import QueueView
from kubetune_operator.reconcile.render import kueue_workload, render
from kubetune_operator.reconcile.status import decide
from kubetune_operator.reconcile.timeutil import format_time
from tests.unit.operator.helpers import T0, at, gang, manifest, pod, running_status

pytestmark = pytest.mark.unit

PREEMPTOR_UID = "6f1c2d3e-0000-4000-8000-00000000abcd"
KUEUE_PREEMPTED = (
    f"Preempted to accommodate a workload (UID: 1111, JobUID: {PREEMPTOR_UID}) due to "
    "prioritization in the ClusterQueue; preemptor path: /gpu-cq; preemptee path: /gpu-cq"
)


def job(**policy: Any) -> FineTuneJob:
    doc = manifest()
    doc["spec"]["runPolicy"] = {**doc["spec"].get("runPolicy", {}), **policy}
    return FineTuneJob.model_validate(doc)


def cond(status: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions", []) if c["type"] == kind), None)


def workload_body(*conditions: tuple[str, str, str, str], admitted_on: str | None = None) -> dict[str, Any]:  # fmt: skip
    """A Workload as Kueue leaves it: conditions (type, status, reason, message), and an
    admission on flavor `admitted_on`."""
    status: dict[str, Any] = {
        "conditions": [
            {
                "type": t,
                "status": s,
                "reason": r,
                "message": m,
                "lastTransitionTime": format_time(T0),
            }
            for t, s, r, m in conditions
        ]
    }
    if admitted_on:
        status["admission"] = {
            "clusterQueue": "gpu-cq",
            "podSetAssignments": [{"name": "workers", "flavors": {"nvidia.com/gpu": admitted_on}}],
        }
    return {
        "metadata": {"name": "finetunejob-llama-lora-abcde", "generation": 1, "resourceVersion": "9"},
        "spec": {"queueName": "gpu-queue", "active": True},
        "status": status,
    }  # fmt: skip


ADMITTED = (
    ("QuotaReserved", "True", "QuotaReserved", "Quota reserved in ClusterQueue gpu-cq"),
    ("Admitted", "True", "Admitted", "The workload is admitted"),
)
PENDING = (
    (
        "QuotaReserved",
        "False",
        "Pending",
        "couldn't assign flavors to pod set workers: insufficient unused quota for "
        "nvidia.com/gpu in flavor gpu, 8 more needed",
    ),
)
EVICTED = (
    *ADMITTED,
    ("Evicted", "True", "Preempted", KUEUE_PREEMPTED),
    ("Preempted", "True", "InClusterQueue", KUEUE_PREEMPTED),
)


def view(body: dict[str, Any] | None, **extra: Any) -> QueueView:
    return QueueView("gpu-queue", wl.verdict(body) if body else None, body, **extra)


def test_a_job_without_a_workload_is_queued_and_gets_one_but_no_pod() -> None:
    d = decide(job(), {}, [], T0, queue=view(None))
    assert d.workload is not None and d.start_attempt is None
    assert d.workload["kind"] == "Workload" and d.workload["spec"]["queueName"] == "gpu-queue"
    assert d.status["phase"] == "Queued"
    assert "LocalQueue gpu-queue" in d.status["message"]


def test_a_pending_workload_says_why_in_kueues_words() -> None:
    d = decide(job(), {"phase": "Queued"}, [], T0, queue=view(workload_body(*PENDING)))
    assert d.status["phase"] == "Queued" and d.start_attempt is None
    assert "insufficient unused quota for nvidia.com/gpu" in d.status["message"]
    queued = cond(d.status, "Queued")
    assert queued and queued["status"] == "True" and queued["reason"] == "Pending"
    assert d.workload is None and d.workload_status is None


def test_an_admitted_job_starts_its_workers_and_says_by_whom() -> None:
    d = decide(job(), {"phase": "Queued"}, [], T0, queue=view(workload_body(*ADMITTED, admitted_on="gpu")))  # fmt: skip
    assert d.start_attempt == 1
    admitted = cond(d.status, "Admitted")
    assert (
        admitted and admitted["status"] == "True" and "ClusterQueue gpu-cq" in admitted["message"]
    )
    assert [e.reason for e in d.events if e.reason == "Admitted"] == ["Admitted"]


def test_an_eviction_stops_the_workers_and_spends_preemption_limit_not_backoff_limit() -> None:
    body = workload_body(*EVICTED, admitted_on="gpu")
    d = decide(
        job(backoffLimit=0), running_status(), gang(), T0, queue=view(body, preemptor="prod-job")
    )
    st = d.status
    assert sorted(d.delete_pods) == ["llama-lora-a1-0", "llama-lora-a1-1"]
    assert (st["attempt"], st["restarts"], st["preemptions"]) == (2, 1, 1)
    assert st["lastFailure"]["reason"] == "Preempted"
    assert "preempted by FineTuneJob prod-job" in st["lastFailure"]["message"]
    preempted = cond(st, "Preempted")
    assert preempted and preempted["status"] == "True" and "prod-job" in preempted["message"]
    assert "waits in LocalQueue gpu-queue" in st["message"]
    assert d.workload_status is None, "quota handed back before the workers stopped"


def test_the_quota_is_handed_back_once_the_evicted_workers_are_gone() -> None:
    body = workload_body(*EVICTED, admitted_on="gpu")
    stopping = [pod(i, 1, "Running", deleting=True) for i in range(2)]
    st = running_status(attempt=2, restarts=1, preemptions=1, phase="Restarting")
    d = decide(job(), st, stopping, at(5), queue=view(body))
    assert d.workload_status is None and d.status["phase"] == "Restarting"
    d = decide(job(), st, [], at(40), queue=view(body))
    assert d.status["phase"] == "Queued" and d.start_attempt is None
    assert "Preempted to accommodate" in d.status["message"]
    assert d.status["message"].endswith("waiting to be admitted again")
    patch = d.workload_status
    assert patch is not None and patch["admission"] is None
    by_type = {c["type"]: c for c in patch["conditions"]}
    assert by_type["QuotaReserved"]["status"] == "False"
    assert by_type["Requeued"]["status"] == "True" and by_type["Requeued"]["reason"] == "Preempted"


def test_preemption_limit_used_up_fails_the_job_and_finishes_the_workload() -> None:
    body = workload_body(*EVICTED, admitted_on="gpu")
    st = running_status(restarts=1, preemptions=1)
    d = decide(job(preemptionLimit=1), st, gang(), T0, queue=view(body))
    assert d.status["phase"] == "Failed"
    assert d.status["lastFailure"]["reason"] == "Preempted"
    assert d.workload_status is not None
    finished = {c["type"]: c for c in d.workload_status["conditions"]}["Finished"]
    assert (finished["status"], finished["reason"]) == ("True", "Failed")


def test_a_finished_job_marks_its_workload_finished_to_release_the_quota() -> None:
    body = workload_body(*ADMITTED, admitted_on="gpu")
    d = decide(job(), running_status(), gang("Succeeded"), T0, queue=view(body))
    assert d.status["phase"] == "Succeeded"
    finished = {c["type"]: c for c in (d.workload_status or {})["conditions"]}["Finished"]
    assert (finished["status"], finished["reason"]) == ("True", "Succeeded")


def test_a_suspended_job_deactivates_its_workload_and_holds_no_quota() -> None:
    body = workload_body(*ADMITTED, admitted_on="gpu")
    d = decide(job(suspend=True), running_status(), gang(), T0, queue=view(body))
    assert d.workload_active is False and d.status["phase"] == "Suspended"
    assert sorted(d.delete_pods) == ["llama-lora-a1-0", "llama-lora-a1-1"]


def test_all_workers_running_tells_kueue_pods_ready() -> None:
    body = workload_body(*ADMITTED, admitted_on="gpu")
    d = decide(job(), running_status(), gang(), T0, queue=view(body))
    ready = {c["type"]: c for c in (d.workload_status or {})["conditions"]}["PodsReady"]
    assert ready["status"] == "True"


def test_a_queue_that_cannot_be_used_is_named() -> None:
    d = decide(job(), {}, [], T0, queue=QueueView("gpu-queue", problem="no Kueue here"))
    assert d.status["phase"] == "Queued" and d.workload is None
    assert "no Kueue here" in d.status["message"]


def test_the_queue_label_is_kueues_convention_and_must_agree_with_spec_queue() -> None:
    doc = manifest()
    doc["spec"].pop("queue")
    doc["metadata"]["labels"] = {"kueue.x-k8s.io/queue-name": "team-q"}
    assert parse_job(doc).queue_name == "team-q"
    doc = manifest()
    doc["metadata"]["labels"] = {"kueue.x-k8s.io/queue-name": "other"}
    with pytest.raises(InvalidSpec, match=r"spec.queue.name \(gpu-queue\) and the label"):
        parse_job(doc)


def test_the_workload_has_one_pod_set_of_the_workers_and_the_jobs_priority() -> None:
    plan = resolve(job(), 1, OperatorSettings())
    prio = wl.Priority("kueue.x-k8s.io", "WorkloadPriorityClass", "production", 1000)
    obj = kueue_workload(plan, "gpu-queue", True, prio)
    spec = obj["spec"]
    assert spec["queueName"] == "gpu-queue" and spec["priority"] == 1000
    assert spec["priorityClassRef"]["name"] == "production"
    (pod_set,) = spec["podSets"]
    assert pod_set["count"] == 2
    ctr = pod_set["template"]["spec"]["containers"][0]
    assert ctr["resources"]["requests"] == {"cpu": "16", "memory": "128Gi", "nvidia.com/gpu": "4"}
    assert pod_set["template"]["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}  # fmt: skip
    assert obj["metadata"]["labels"][wl.JOB_UID_LABEL] == plan.uid
    assert obj["metadata"]["ownerReferences"][0]["kind"] == "FineTuneJob"


def test_the_admitted_flavors_place_the_workers() -> None:
    flavor = {"spec": {"nodeLabels": {"pool": "a100"}, "tolerations": [{"key": "gpu", "operator": "Exists"}]}}  # fmt: skip
    plan = resolve(job(), 1, OperatorSettings(), placement=wl.placement([flavor]))
    worker = next(o for o in render(plan) if o["kind"] == "Pod")["spec"]
    assert worker["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "pool": "a100"}  # fmt: skip
    assert {"key": "gpu", "operator": "Exists"} in worker["tolerations"]


def test_kueue_names_the_preemptor_by_job_uid() -> None:
    assert wl.preemptor_job_uid(KUEUE_PREEMPTED) == PREEMPTOR_UID
    assert wl.preemptor_job_uid("The ClusterQueue is stopped") is None


@pytest.mark.parametrize(
    ("gang_spec", "group_fields", "marks"),
    [
        (
            {"scheduler": "coscheduling", "scheduleTimeoutSeconds": 600},
            {"minMember": 2, "scheduleTimeoutSeconds": 600},
            ("labels", "scheduling.x-k8s.io/pod-group"),
        ),
        (
            {"scheduler": "volcano", "volcanoQueue": "research"},
            {"minMember": 2, "queue": "research", "priorityClassName": "training"},
            ("annotations", "scheduling.k8s.io/group-name"),
        ),
    ],
)
def test_a_gang_gets_a_pod_group_and_its_workers_join_it(
    gang_spec: dict[str, Any], group_fields: dict[str, Any], marks: tuple[str, str]
) -> None:
    doc = manifest()
    doc["spec"]["resources"]["gang"] = gang_spec
    objs = render(resolve(FineTuneJob.model_validate(doc), 1, OperatorSettings()))
    (group,) = [o for o in objs if o["kind"] == "PodGroup"]
    assert group["metadata"]["name"] == "llama-lora-gang"
    assert group_fields.items() <= group["spec"].items()
    assert group["spec"]["minResources"] == {"cpu": "32", "memory": "274877906944", "nvidia.com/gpu": "8"}  # fmt: skip
    assert group["metadata"]["ownerReferences"][0]["name"] == "llama-lora"
    scheduler = OperatorSettings().gang_scheduler(gang_spec["scheduler"])
    for worker in (o for o in objs if o["kind"] == "Pod"):
        assert worker["metadata"][marks[0]][marks[1]] == "llama-lora-gang"
        assert worker["spec"]["schedulerName"] == scheduler


def test_a_gang_waits_in_the_schedulers_words() -> None:
    doc = manifest()
    doc["spec"]["resources"]["gang"] = {"scheduler": "coscheduling"}
    doc["spec"].pop("queue")
    pending = [pod(i, 1, "Pending", scheduled=False) for i in range(2)]
    for p in pending:
        p["status"]["conditions"][0]["message"] = "rejected due to timeout after waiting 10s"
    d = decide(FineTuneJob.model_validate(doc), {"phase": "Pending", "attempt": 1}, pending, T0)
    assert d.status["phase"] == "Pending"
    assert "binds all 2 workers together or none (0/2 bound)" in d.status["message"]
    assert "rejected due to timeout" in d.status["message"]


def test_gang_fields_of_the_other_scheduler_are_refused() -> None:
    doc = copy.deepcopy(manifest())
    doc["spec"]["resources"]["gang"] = {"scheduler": "coscheduling", "volcanoQueue": "q"}
    with pytest.raises(ValueError, match="volcanoQueue is only used by scheduler volcano"):
        FineTuneJob.model_validate(doc)


@pytest.mark.parametrize(
    ("quantity", "workers", "total"),
    [("16", 2, "32"), ("128Gi", 2, "274877906944"), ("500m", 3, "1500m"), (4, 2, "8"),
     ("1.5", 3, "4500m"), ("1e3", 2, "2000"), ("2k", 2, "4000")],
)  # fmt: skip
def test_a_pod_groups_min_resources_are_the_gangs_requests(
    quantity: Any, workers: int, total: str
) -> None:
    assert times(quantity, workers) == total
