"""The sweep and schedule controllers against a real kube-apiserver, with the clock passed in:
what they create (real FineTuneJobs, owned and labelled), what they write, and that no pass,
however repeated, cut short or run by a fresh controller, ever makes a trial or run twice.

The tests play the FineTuneJob operator and trainer: they write a trial's or run's status
(phase, progress, benchmark) through the status subresource, as those two would.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from kubernetes import client

from kubetune_operator.api import constants as c
from kubetune_operator.apply import Writer
from kubetune_operator.lifecycle.controller import ScheduleController, SweepController
from kubetune_operator.lifecycle.reads import ParentReader
from kubetune_operator.reconcile.plan import OperatorSettings
from kubetune_operator.reconcile.timeutil import parse_time
from tests.unit.lifecycle_cases import valid_schedule, valid_sweep

pytestmark = pytest.mark.k8s
SETTINGS = OperatorSettings(trainer_image="kubetune/trainer:test")


class Clock:
    """A clock the test moves."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class Api:
    """Custom objects of one namespace."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.custom, self.ns = client.CustomObjectsApi(api), namespace

    def create(self, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        return dict(
            self.custom.create_namespaced_custom_object(c.GROUP, c.VERSION, self.ns, plural, body)
        )

    def get(self, plural: str, name: str) -> dict[str, Any]:
        return dict(
            self.custom.get_namespaced_custom_object(c.GROUP, c.VERSION, self.ns, plural, name)
        )

    def jobs(self, label: str, parent: str) -> dict[str, dict[str, Any]]:
        items = self.custom.list_namespaced_custom_object(
            c.GROUP, c.VERSION, self.ns, c.PLURAL, label_selector=f"{label}={parent}"
        )["items"]
        return {j["metadata"]["name"]: j for j in items}

    def set_job_status(self, name: str, status: dict[str, Any]) -> None:
        """What the job operator and the trainer write: phase, progress, output, benchmark."""
        self.custom.patch_namespaced_custom_object_status(
            c.GROUP, c.VERSION, self.ns, c.PLURAL, name, {"status": status}
        )


class FlakyWriter(Writer):
    """A writer whose next job creates fail, as a pass cut short after its status write."""

    failures = 0

    def create_job(self, obj: dict[str, Any]) -> bool:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("the pass ended here")
        return super().create_job(obj)


def controller(kind: type, k8s_api: client.ApiClient, clock: Callable[[], datetime]) -> Any:
    """A fresh controller (a restarted operator keeps nothing in memory)."""
    return kind(ParentReader(k8s_api), FlakyWriter(k8s_api), SETTINGS, clock)


def evals(points: list[tuple[int, float]]) -> dict[str, Any]:
    return {"evals": [{"step": s, "loss": v} for s, v in points], "evalLoss": points[-1][1],
            "step": points[-1][0], "exportedStep": points[-1][0]}  # fmt: skip


def test_sweep_runs_its_grid_stops_a_loser_and_marks_the_best(
    k8s_api: client.ApiClient, crd_installed: str, namespace: str
) -> None:
    api = Api(k8s_api, namespace)
    body = valid_sweep("grid")
    body["spec"]["template"]["spec"]["checkpoint"] = {"uri": "s3://ckpt/grid"}
    sweep = api.create(c.SWEEP_PLURAL, body)
    clock = Clock(parse_time(sweep["metadata"]["creationTimestamp"]) or datetime.now())
    ctl = controller(SweepController, k8s_api, clock)

    # A pass cut short after writing down its trials: the next one (a restarted operator)
    # creates them, each once.
    ctl.writer.failures = 1
    with pytest.raises(RuntimeError):
        ctl.reconcile(namespace, "grid")
    assert api.jobs(c.LABEL_SWEEP, "grid") == {}
    assert len(api.get(c.SWEEP_PLURAL, "grid")["status"]["trials"]) == 2
    for _ in range(3):
        controller(SweepController, k8s_api, clock).reconcile(namespace, "grid")
    jobs = api.jobs(c.LABEL_SWEEP, "grid")
    assert sorted(jobs) == ["grid-t0", "grid-t1"]
    t1 = jobs["grid-t1"]
    assert (
        t1["spec"]["method"]["lora"]["r"] == 16 and t1["spec"]["training"]["learningRate"] == 0.0003
    )
    assert t1["spec"]["checkpoint"]["uri"] == "s3://ckpt/grid/grid-t1"
    owner = t1["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"]) == ("FineTuneSweep", sweep["metadata"]["uid"])
    assert t1["spec"]["resources"]["nodes"] == 1  # the apiserver defaulted the trial as a job

    api.set_job_status("grid-t0", {"phase": "Succeeded", "output": {"uri": "s3://models/out/grid-t0"},
                                   "progress": evals([(5, 2.0), (10, 0.8), (20, 0.5)])})  # fmt: skip
    api.set_job_status("grid-t1", {"phase": "Succeeded", "output": {"uri": "s3://models/out/grid-t1"},
                                   "progress": evals([(5, 1.8), (10, 0.7), (20, 0.4)])})  # fmt: skip
    ctl.reconcile(namespace, "grid")
    assert sorted(api.jobs(c.LABEL_SWEEP, "grid")) == ["grid-t0", "grid-t1", "grid-t2", "grid-t3"]

    api.set_job_status("grid-t2", {"phase": "Running", "progress": evals([(5, 3.0), (10, 2.9)])})
    api.set_job_status("grid-t3", {"phase": "Running", "progress": evals([(5, 1.9)])})
    ctl.reconcile(namespace, "grid")
    status = api.get(c.SWEEP_PLURAL, "grid")["status"]
    t2 = status["trials"][2]
    assert t2["phase"] == "Terminated" and "worse than" in t2["message"]
    assert "grid-t2" not in api.jobs(c.LABEL_SWEEP, "grid")  # deleted: its pods go with it

    api.set_job_status("grid-t3", {"phase": "Succeeded", "output": {"uri": "s3://models/out/grid-t3"},
                                   "progress": evals([(5, 1.7), (10, 0.6), (20, 0.3)])})  # fmt: skip
    ctl.reconcile(namespace, "grid")
    status = api.get(c.SWEEP_PLURAL, "grid")["status"]
    assert (
        status["phase"] == "Succeeded"
        and status["summary"] == "4/4 done: 3 succeeded, 1 terminated"
    )
    assert (
        status["best"]["trial"] == "grid-t3"
        and status["best"]["outputUri"] == "s3://models/out/grid-t3"
    )
    assert [t.get("best") for t in status["trials"]] == [None, None, None, True]
    # Nothing more happens, however often it is looked at again.
    for _ in range(2):
        controller(SweepController, k8s_api, clock).reconcile(namespace, "grid")
    assert sorted(api.jobs(c.LABEL_SWEEP, "grid")) == ["grid-t0", "grid-t1", "grid-t3"]


def test_schedule_on_a_clock_gates_promotes_and_never_runs_twice(
    k8s_api: client.ApiClient, crd_installed: str, namespace: str
) -> None:
    api = Api(k8s_api, namespace)
    body = valid_schedule("hourly")
    body["spec"]["schedule"] = "0 * * * *"
    body["spec"]["template"]["spec"]["output"] = {"uri": "s3://models/hourly"}
    created = api.create(c.SCHEDULE_PLURAL, body)
    start = parse_time(created["metadata"]["creationTimestamp"]) or datetime.now()
    next_hour = start.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    clock = Clock(start)
    ctl = controller(ScheduleController, k8s_api, clock)

    assert ctl.reconcile(namespace, "hourly") == pytest.approx((next_hour - start).total_seconds())
    assert api.jobs(c.LABEL_SCHEDULE, "hourly") == {}

    clock.now = next_hour + timedelta(seconds=3)
    for _ in range(3):  # repeated passes and restarted operators at the same time
        controller(ScheduleController, k8s_api, clock).reconcile(namespace, "hourly")
    runs = api.jobs(c.LABEL_SCHEDULE, "hourly")
    assert sorted(runs) == ["hourly-r1"]
    r1 = runs["hourly-r1"]
    assert r1["spec"]["benchmark"]["uri"] == "s3://data/bench.jsonl"
    assert r1["spec"]["model"]["source"] == "s3://models/base"
    assert r1["spec"]["output"]["uri"] == "s3://models/hourly/hourly-r1"

    bench = {"sha256": "b" * 64, "records": 24}
    api.set_job_status("hourly-r1", {"phase": "Succeeded", "output": {"uri": "s3://models/hourly/hourly-r1"},
                                     "benchmark": {**bench, "before": {"evalLoss": 2.1}, "after": {"evalLoss": 0.9}}})  # fmt: skip
    ctl.reconcile(namespace, "hourly")
    status = api.get(c.SCHEDULE_PLURAL, "hourly")["status"]
    assert (
        status["promoted"]["uri"] == "s3://models/hourly/hourly-r1"
        and status["lastResult"] == "Promoted"
    )

    # The next hour's run continues the promoted model; a pass cut short after writing it down
    # is finished by the next, which creates it once.
    clock.advance(hours=1)
    ctl.writer.failures = 1
    with pytest.raises(RuntimeError):
        ctl.reconcile(namespace, "hourly")
    controller(ScheduleController, k8s_api, clock).reconcile(namespace, "hourly")
    runs = api.jobs(c.LABEL_SCHEDULE, "hourly")
    assert sorted(runs) == ["hourly-r1", "hourly-r2"]
    assert runs["hourly-r2"]["spec"]["model"]["source"] == "s3://models/hourly/hourly-r1"

    api.set_job_status("hourly-r2", {"phase": "Succeeded", "output": {"uri": "s3://models/hourly/hourly-r2"},
                                     "benchmark": {**bench, "before": {"evalLoss": 0.9}, "after": {"evalLoss": 1.4}}})  # fmt: skip
    ctl.reconcile(namespace, "hourly")
    status = api.get(c.SCHEDULE_PLURAL, "hourly")["status"]
    assert status["promoted"]["run"] == "hourly-r1" and status["lastResult"] == "Rejected"
    r2 = status["runs"][1]
    assert (
        r2["promoted"] is False
        and r2["current"] == {"evalLoss": 0.9}
        and r2["candidate"] == {"evalLoss": 1.4}
    )
    assert "worse by 0.5000" in r2["reason"]
    assert status["nextRun"] == 3 and len(api.jobs(c.LABEL_SCHEDULE, "hourly")) == 2

    # kubectl shows it.
    events = client.CoreV1Api(k8s_api).list_namespaced_event(namespace).items
    reasons = {e.reason for e in events if e.involved_object.name == "hourly"}
    assert {"RunStarted", "Promoted", "NotPromoted"} <= reasons


def test_an_invalid_schedule_is_failed_naming_the_field(
    k8s_api: client.ApiClient, crd_installed: str, namespace: str
) -> None:
    """What admission cannot see (a cron hour of 25 matches the five-field pattern) is refused
    by the controller, in status, without a run."""
    api = Api(k8s_api, namespace)
    body = copy.deepcopy(valid_schedule("bad-hour"))
    body["spec"]["schedule"] = "0 25 * * *"
    api.create(c.SCHEDULE_PLURAL, body)
    controller(ScheduleController, k8s_api, Clock(datetime.now())).reconcile(namespace, "bad-hour")
    status = api.get(c.SCHEDULE_PLURAL, "bad-hour")["status"]
    assert (
        status["phase"] == "Failed"
        and "spec.schedule: hour 25 is outside 0-23" in status["message"]
    )
    assert api.jobs(c.LABEL_SCHEDULE, "bad-hour") == {}
