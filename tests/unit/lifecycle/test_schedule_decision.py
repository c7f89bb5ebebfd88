"""A schedule's reconcile decision, pass by pass and with the clock passed in: runs on cron
times or on new data, continuing the promoted model, gated on the benchmark, promoted or not,
concurrency as CronJob, and no run made twice."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kubetune_operator.api.schedule import FineTuneSchedule
from kubetune_operator.lifecycle.schedule import ScheduleDecision, decide_schedule
from kubetune_operator.reconcile.plan import OperatorSettings
from tests.unit.lifecycle_cases import valid_schedule

pytestmark = pytest.mark.unit
T0 = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)  # created an hour before the 03:00 run
SETTINGS = OperatorSettings(trainer_image="kubetune/trainer:test")


def schedule(**changes: Any) -> dict[str, Any]:
    body = valid_schedule("nightly")
    body["metadata"].update(
        namespace="ml", uid="sched-uid", generation=1, creationTimestamp="2026-03-01T02:00:00Z"
    )
    spec = body["spec"]["template"]["spec"]
    spec["checkpoint"] = {"uri": "s3://ckpt/nightly", "credentialsSecret": "ckpt-keys"}
    spec["output"] = {"uri": "s3://models/nightly", "endpoint": "http://minio:9000"}
    spec["dataset"]["credentialsSecret"] = "data-keys"
    body["spec"].update(changes)
    return body


def decide(
    body: dict[str, Any], status: dict[str, Any], now: datetime,
    runs: dict[str, Any] | None = None, pods: list[dict[str, Any]] | None = None,
) -> ScheduleDecision:  # fmt: skip
    model = FineTuneSchedule.model_validate({k: v for k, v in body.items() if k != "status"})
    return decide_schedule(
        model, body["spec"]["template"], status, runs or {}, pods or [], now, SETTINGS
    )


def run(
    name: str, phase: str | None, before: float | None = None, after: float | None = None
) -> dict[str, Any]:
    st: dict[str, Any] = {"phase": phase} if phase else {}
    if phase == "Succeeded":
        st["output"] = {"uri": f"s3://models/nightly/{name}"}
        st["benchmark"] = {"uri": "s3://data/bench.jsonl", "sha256": "b" * 64, "records": 24,
                           "before": {"evalLoss": before}, "after": {"evalLoss": after}}  # fmt: skip
        st["dataSources"] = [{"uri": "s3://data/train.jsonl", "sha256": "d" * 64, "records": 100}]
    if phase == "Failed":
        st["message"] = "attempt 1 failed (OOMKilled)"
    return {"metadata": {"name": name, "uid": f"uid-{name}"}, "status": st}


def names(d: ScheduleDecision) -> list[str]:
    return [m["metadata"]["name"] for m in d.create_jobs]


def test_nothing_runs_before_the_first_cron_time_and_the_next_one_is_shown() -> None:
    d = decide(schedule(), {}, T0 + timedelta(minutes=30))
    assert names(d) == [] and d.status["nextScheduleTime"] == "2026-03-01T03:00:00Z"
    assert d.requeue_after == pytest.approx(30 * 60)


def test_a_due_cron_time_starts_one_run_from_the_template_with_the_benchmark() -> None:
    d = decide(schedule(), {}, T0 + timedelta(hours=1, seconds=5))
    assert names(d) == ["nightly-r1"]
    job = d.create_jobs[0]
    assert job["spec"]["benchmark"] == {"uri": "s3://data/bench.jsonl", "exactMatch": False}
    assert job["spec"]["model"]["source"] == "s3://models/base"
    assert job["spec"]["output"]["uri"] == "s3://models/nightly/nightly-r1"
    assert job["spec"]["checkpoint"]["uri"] == "s3://ckpt/nightly/nightly-r1"
    assert job["metadata"]["labels"]["kubetune.dev/schedule"] == "nightly"
    assert job["metadata"]["ownerReferences"][0]["kind"] == "FineTuneSchedule"
    st = d.status
    assert st["lastScheduleTime"] == "2026-03-01T03:00:00Z" and st["nextRun"] == 2
    assert st["active"] == ["nightly-r1"] and st["runs"][0]["phase"] == "Pending"
    # The same time again (a repeated pass, a restarted operator) makes nothing new.
    again = decide(
        schedule(), st, T0 + timedelta(hours=1, seconds=9), {"nightly-r1": run("nightly-r1", None)}
    )
    assert names(again) == [] and again.status["nextRun"] == 2


def test_a_run_written_down_but_never_created_is_created_under_its_name() -> None:
    status = decide(schedule(), {}, T0 + timedelta(hours=1)).status
    d = decide(schedule(), status, T0 + timedelta(hours=1, minutes=1))
    assert names(d) == ["nightly-r1"]


def test_a_better_run_is_promoted_and_the_next_run_continues_it() -> None:
    status = decide(schedule(), {}, T0 + timedelta(hours=1)).status
    d = decide(
        schedule(),
        status,
        T0 + timedelta(hours=2),
        {"nightly-r1": run("nightly-r1", "Succeeded", 2.0, 0.7)},
    )
    r1 = d.status["runs"][0]
    assert r1["promoted"] is True and "0.7000 vs 2.0000" in r1["reason"]
    assert r1["current"] == {"evalLoss": 2.0} and r1["candidate"] == {"evalLoss": 0.7}
    assert r1["dataSources"][0]["sha256"] == "d" * 64
    assert d.status["promoted"]["uri"] == "s3://models/nightly/nightly-r1"
    assert d.status["lastResult"] == "Promoted" and "active" not in d.status
    assert [e.reason for e in d.events] == ["Promoted"]

    d2 = decide(schedule(), d.status, T0 + timedelta(days=1, hours=1))
    job = d2.create_jobs[0]
    assert job["metadata"]["name"] == "nightly-r2"
    # Continuing the promoted adapter, read from the store outputs are written to.
    assert job["spec"]["model"] == {
        "source": "s3://models/nightly/nightly-r1",
        "credentialsSecret": "ckpt-keys",
        "endpoint": "http://minio:9000",
    }
    assert d2.status["runs"][1]["startedFrom"] == "s3://models/nightly/nightly-r1"


def test_a_worse_run_is_not_promoted_and_the_promoted_model_stays() -> None:
    status = decide(schedule(), {}, T0 + timedelta(hours=1)).status
    status = decide(
        schedule(),
        status,
        T0 + timedelta(hours=2),
        {"nightly-r1": run("nightly-r1", "Succeeded", 2.0, 0.7)},
    ).status
    status = decide(schedule(), status, T0 + timedelta(days=1, hours=1)).status
    d = decide(
        schedule(),
        status,
        T0 + timedelta(days=1, hours=2),
        {"nightly-r2": run("nightly-r2", "Succeeded", 0.7, 1.3)},
    )
    r2 = d.status["runs"][1]
    assert r2["promoted"] is False and "worse by 0.6000, more than the margin 0.01" in r2["reason"]
    assert d.status["promoted"]["run"] == "nightly-r1" and d.status["lastResult"] == "Rejected"
    assert [e.reason for e in d.events] == ["NotPromoted"]


def test_a_failed_run_is_recorded_and_never_promoted() -> None:
    status = decide(schedule(), {}, T0 + timedelta(hours=1)).status
    d = decide(
        schedule(), status, T0 + timedelta(hours=2), {"nightly-r1": run("nightly-r1", "Failed")}
    )
    assert d.status["runs"][0]["phase"] == "Failed" and "OOMKilled" in d.status["runs"][0]["reason"]
    assert "promoted" not in d.status and d.status["lastResult"] == "Failed"


@pytest.mark.parametrize("policy, starts, deleted", [("Forbid", [], []), ("Allow", ["nightly-r2"], []),
                                                     ("Replace", ["nightly-r2"], [("nightly-r1", "uid-nightly-r1")])])  # fmt: skip
def test_concurrency_policy(policy: str, starts: list[str], deleted: list[tuple[str, str]]) -> None:
    body = schedule(concurrencyPolicy=policy)
    status = decide(body, {}, T0 + timedelta(hours=1)).status
    runs = {"nightly-r1": run("nightly-r1", "Running")}
    d = decide(body, status, T0 + timedelta(days=1, hours=1), runs)
    assert names(d) == starts and d.delete_jobs == deleted
    if policy == "Forbid":
        assert "waits for nightly-r1" in d.status["message"]
        # It starts once the active run is done, if still due.
        runs = {"nightly-r1": run("nightly-r1", "Succeeded", 2.0, 1.0)}
        assert names(decide(body, d.status, T0 + timedelta(days=1, hours=2), runs)) == [
            "nightly-r2"
        ]
    if policy == "Replace":
        assert (
            d.status["runs"][0]["phase"] == "Failed" and "replaced" in d.status["runs"][0]["reason"]
        )


def test_a_run_past_its_starting_deadline_is_skipped() -> None:
    body = schedule(startingDeadlineSeconds=600)
    d = decide(body, {}, T0 + timedelta(hours=1, minutes=30))
    assert names(d) == [] and [e.reason for e in d.events] == ["MissedSchedule"]
    assert d.status["lastScheduleTime"] == "2026-03-01T03:00:00Z"


def test_suspended_schedules_start_nothing() -> None:
    d = decide(schedule(suspend=True), {}, T0 + timedelta(days=3))
    assert names(d) == [] and d.status["phase"] == "Suspended"


def test_history_is_bounded_and_old_jobs_go_but_never_the_promoted_ones() -> None:
    body = schedule(historyLimit=2)
    status: dict[str, Any] = {}
    runs: dict[str, Any] = {}
    for day in range(4):
        status = decide(body, status, T0 + timedelta(days=day, hours=1), runs).status
        name = f"nightly-r{day + 1}"
        after = 0.5 if day == 0 else 2.0  # only the first run is better than what it continues
        runs[name] = run(name, "Succeeded", 1.0, after)
        d = decide(body, status, T0 + timedelta(days=day, hours=2), runs)
        status = d.status
    assert [r["name"] for r in status["runs"]] == ["nightly-r3", "nightly-r4"]
    assert status["promoted"]["run"] == "nightly-r1"
    assert ("nightly-r2", "uid-nightly-r2") in d.delete_jobs
    assert all(name != "nightly-r1" for name, _ in d.delete_jobs)


# -- new data ---------------------------------------------------------------------------------


def new_data(**trigger: Any) -> dict[str, Any]:
    body = schedule()
    del body["spec"]["schedule"]
    body["spec"]["trigger"] = {
        "newData": {"prefix": "s3://data/incoming/", "pollInterval": "10m", **trigger}
    }
    return body


def listed(pod: dict[str, Any], entries: list[tuple[str, str]], version: str) -> dict[str, Any]:
    message = {"prefix": "s3://data/incoming/", "version": version, "objects": len(entries),
               "entries": [{"uri": f"s3://data/incoming/{n}", "version": v, "modified": "2026-03-01T00:00:00Z"}
                           for n, v in entries]}  # fmt: skip
    pod = json.loads(json.dumps(pod))
    pod["status"] = {"phase": "Succeeded", "containerStatuses": [
        {"name": "data-watch", "state": {"terminated": {"exitCode": 0, "message": json.dumps(message)}}}]}  # fmt: skip
    return pod


def test_new_data_is_listed_by_a_pod_holding_the_data_stores_keys() -> None:
    d = decide(new_data(), {}, T0)
    [pod] = d.create_pods
    assert pod["metadata"]["name"] == "nightly-w1"
    container = pod["spec"]["containers"][0]
    assert container["command"][:3] == ["python", "-m", "kubetune_trainer.datawatch"]
    assert container["command"][3:] == ["--prefix", "s3://data/incoming/"]
    keys = {
        e["name"]: e["valueFrom"]["secretKeyRef"]["name"]
        for e in container["env"]
        if "valueFrom" in e
    }
    assert keys["KUBETUNE_S3_DATASET_ACCESS_KEY_ID"] == "data-keys"
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert d.status["data"]["seq"] == 1 and names(d) == []


def test_new_data_starts_a_run_on_the_latest_drop_then_waits_for_the_next_listing() -> None:
    d = decide(new_data(), {}, T0)
    pod = listed(d.create_pods[0], [("day-2/", "v2"), ("day-1/", "v1")], "A")
    d = decide(new_data(), d.status, T0 + timedelta(seconds=20), pods=[pod])
    assert names(d) == ["nightly-r1"] and d.delete_pods == ["nightly-w1"]
    assert d.create_jobs[0]["spec"]["dataset"]["train"] == "s3://data/incoming/day-2/"
    record = d.status["runs"][0]
    assert record["dataVersion"] == "A" and record["trigger"].startswith("new data A")
    assert d.status["data"]["consumed"] == "A"
    # The pod is still going away; no new listing before pollInterval.
    d = decide(
        new_data(),
        d.status,
        T0 + timedelta(minutes=5),
        {"nightly-r1": run("nightly-r1", None)},
        [pod],
    )
    assert d.create_pods == [] and names(d) == []
    assert d.requeue_after == pytest.approx(5 * 60)
    d = decide(
        new_data(), d.status, T0 + timedelta(minutes=10), {"nightly-r1": run("nightly-r1", None)}
    )
    assert [p["metadata"]["name"] for p in d.create_pods] == ["nightly-w2"]
    # The same listing again: no run.
    same = listed(d.create_pods[0], [("day-2/", "v2"), ("day-1/", "v1")], "A")
    d = decide(
        new_data(),
        d.status,
        T0 + timedelta(minutes=11),
        {"nightly-r1": run("nightly-r1", None)},
        [same],
    )
    assert names(d) == [] and d.delete_pods == ["nightly-w2"]


def test_new_data_while_a_run_is_active_waits_then_starts() -> None:
    d = decide(new_data(), {}, T0)
    d = decide(new_data(), d.status, T0, pods=[listed(d.create_pods[0], [("day-1/", "v1")], "A")])
    status = decide(
        new_data(),
        d.status,
        T0 + timedelta(minutes=10),
        {"nightly-r1": run("nightly-r1", "Running")},
    ).status
    pod = listed({"metadata": {"name": "nightly-w2"}}, [("day-2/", "v2"), ("day-1/", "v1")], "B")
    d = decide(
        new_data(),
        status,
        T0 + timedelta(minutes=11),
        {"nightly-r1": run("nightly-r1", "Running")},
        [pod],
    )
    assert names(d) == [] and d.status["data"]["pending"]["version"] == "B"
    assert "waits for nightly-r1" in d.status["message"]
    d = decide(
        new_data(),
        d.status,
        T0 + timedelta(minutes=12),
        {"nightly-r1": run("nightly-r1", "Succeeded", 2.0, 1.0)},
    )
    assert names(d) == ["nightly-r2"]
    assert d.create_jobs[0]["spec"]["model"]["source"] == "s3://models/nightly/nightly-r1"
    assert d.create_jobs[0]["spec"]["dataset"]["train"] == "s3://data/incoming/day-2/"


def test_a_failed_listing_is_reported_and_retried_at_the_next_poll() -> None:
    d = decide(new_data(), {}, T0)
    pod = {"metadata": {"name": "nightly-w1"}, "status": {"phase": "Failed", "containerStatuses": [
        {"state": {"terminated": {"exitCode": 1, "message": "cannot list s3://data/incoming/: AccessDenied"}}}]}}  # fmt: skip
    d = decide(new_data(), d.status, T0 + timedelta(seconds=30), pods=[pod])
    assert "AccessDenied" in d.status["data"]["message"] and [e.reason for e in d.events] == [
        "DataWatchFailed"
    ]
    assert names(d) == [] and d.create_pods == []
    d = decide(new_data(), d.status, T0 + timedelta(minutes=10))
    assert [p["metadata"]["name"] for p in d.create_pods] == ["nightly-w2"]


def test_train_on_all_gives_the_run_the_whole_prefix() -> None:
    body = new_data(trainOn="all")
    d = decide(body, {}, T0)
    d = decide(body, d.status, T0, pods=[listed(d.create_pods[0], [("day-1/", "v1")], "A")])
    assert d.create_jobs[0]["spec"]["dataset"]["train"] == "s3://data/incoming/"
