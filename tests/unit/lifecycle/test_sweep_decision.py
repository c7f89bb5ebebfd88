"""A sweep's reconcile decision, pass by pass: trials up to parallelism, each in its own
folders and owned by the sweep, objectives read from the trial jobs, losers stopped, the best
marked, and no trial made twice however often a pass is repeated or cut short."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from kubetune_operator.api.sweep import FineTuneSweep
from kubetune_operator.lifecycle.sweep import SweepDecision, decide_sweep
from tests.unit.lifecycle_cases import valid_sweep

pytestmark = pytest.mark.unit
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def sweep(**changes: Any) -> dict[str, Any]:
    body = valid_sweep("lr-rank")
    body["metadata"].update(namespace="ml", uid="sweep-uid", generation=1)
    body["spec"]["template"]["spec"]["checkpoint"] = {"uri": "s3://ckpt/sweep"}
    body["spec"].update(changes)
    return body


def decide(body: dict[str, Any], status: dict[str, Any], jobs: dict[str, Any]) -> SweepDecision:
    return decide_sweep(
        FineTuneSweep.model_validate({k: v for k, v in body.items() if k != "status"}),
        body["spec"]["template"],
        status,
        jobs,
        NOW,
    )


def job(
    name: str, phase: str | None, evals: list[tuple[int, float]] = (), **progress: Any
) -> dict[str, Any]:
    st: dict[str, Any] = {"phase": phase} if phase else {}
    points = [{"step": s, "loss": v} for s, v in evals]
    st["progress"] = {"evals": points, **progress}
    if points:
        st["progress"].setdefault("evalLoss", points[-1]["loss"])
        st["progress"].setdefault("step", points[-1]["step"])
    if phase == "Succeeded":
        st["output"] = {"uri": f"s3://models/out/{name}"}
    return {"metadata": {"name": name, "uid": f"uid-{name}"}, "status": st}


def created(d: SweepDecision) -> list[str]:
    return [m["metadata"]["name"] for m in d.create]


def test_first_pass_creates_parallelism_trials_in_their_own_folders() -> None:
    d = decide(sweep(), {}, {})
    assert created(d) == ["lr-rank-t0", "lr-rank-t1"]
    t1 = d.create[1]
    assert (
        t1["spec"]["training"]["learningRate"] == 0.0003 and t1["spec"]["method"]["lora"]["r"] == 16
    )
    assert t1["spec"]["output"]["uri"] == "s3://models/out/lr-rank-t1"
    assert t1["spec"]["checkpoint"]["uri"] == "s3://ckpt/sweep/lr-rank-t1"
    assert t1["metadata"]["labels"]["kubetune.dev/sweep"] == "lr-rank"
    assert t1["metadata"]["labels"]["kubetune.dev/trial"] == "1"
    owner = t1["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == (
        "FineTuneSweep",
        "sweep-uid",
        True,
    )
    st = d.status
    assert [t["phase"] for t in st["trials"]] == ["Pending", "Pending"]
    assert st["phase"] == "Running" and st["totalTrials"] == 4 and st["summary"] == "0/4 done"
    assert st["trials"][1]["parameters"] == {"training.learningRate": 0.0003, "method.lora.r": 16}


def test_repeating_a_pass_or_finishing_a_cut_one_never_duplicates_a_trial() -> None:
    first = decide(sweep(), {}, {})
    # The status was written but the pass died before creating trial 1: the next pass makes
    # exactly that one again, under the same name, and no third.
    jobs = {"lr-rank-t0": job("lr-rank-t0", "Running")}
    again = decide(sweep(), first.status, jobs)
    assert created(again) == ["lr-rank-t1"]
    assert len(again.status["trials"]) == 2
    jobs["lr-rank-t1"] = job("lr-rank-t1", None)
    assert created(decide(sweep(), again.status, jobs)) == []


def test_finished_trials_give_way_to_new_ones_and_the_best_is_marked() -> None:
    status = decide(sweep(), {}, {}).status
    jobs = {
        "lr-rank-t0": job(
            "lr-rank-t0", "Succeeded", [(0, 7.0), (10, 1.0), (20, 0.6)], exportedStep=20
        ),
        "lr-rank-t1": job("lr-rank-t1", "Succeeded", [(10, 0.9), (20, 0.5)], exportedStep=20),
    }
    d = decide(sweep(), status, jobs)
    assert created(d) == ["lr-rank-t2", "lr-rank-t3"]
    trials = {t["name"]: t for t in d.status["trials"]}
    assert trials["lr-rank-t0"]["objective"] == 0.6 and trials["lr-rank-t1"]["objective"] == 0.5
    assert trials["lr-rank-t1"].get("best") is True and "best" not in trials["lr-rank-t0"]
    assert d.status["best"] == {
        "trial": "lr-rank-t1",
        "objective": 0.5,
        "parameters": {"training.learningRate": 0.0003, "method.lora.r": 16},
        "outputUri": "s3://models/out/lr-rank-t1",
    }


def test_the_objective_is_the_exported_steps_eval_loss() -> None:
    """With early stopping the export holds the best evaluation's weights, not the last."""
    status = decide(sweep(), {}, {}).status
    jobs = {"lr-rank-t0": job("lr-rank-t0", "Succeeded", [(10, 0.4), (20, 0.7)], exportedStep=10)}
    trials = decide(sweep(), status, jobs).status["trials"]
    assert trials[0]["objective"] == 0.4


def test_a_clearly_losing_trial_is_stopped_and_the_next_one_starts() -> None:
    status = decide(sweep(), {}, {}).status
    good = {
        "lr-rank-t0": job(
            "lr-rank-t0", "Succeeded", [(5, 2.0), (10, 0.8), (20, 0.4)], exportedStep=20
        ),
        "lr-rank-t1": job(
            "lr-rank-t1", "Succeeded", [(5, 1.8), (10, 0.7), (20, 0.35)], exportedStep=20
        ),
    }
    status = decide(sweep(), status, good).status
    jobs = {**good, "lr-rank-t2": job("lr-rank-t2", "Running", [(5, 3.0), (10, 2.9)]),
            "lr-rank-t3": job("lr-rank-t3", "Running", [(5, 1.9)])}  # fmt: skip
    d = decide(sweep(), status, jobs)
    assert d.delete == [("lr-rank-t2", "uid-lr-rank-t2")]
    t2 = d.status["trials"][2]
    assert t2["phase"] == "Terminated" and "worse than" in t2["message"] and t2["step"] == 10
    assert [e.reason for e in d.events] == ["TrialTerminated"]
    assert d.status["summary"] == "3/4 done: 2 succeeded, 1 terminated"
    # The deletion did not go through (the pass ended): the next pass deletes again.
    assert decide(sweep(), d.status, jobs).delete == [("lr-rank-t2", "uid-lr-rank-t2")]
    jobs["lr-rank-t2"]["metadata"]["deletionTimestamp"] = "2026-03-01T12:00:01Z"
    assert decide(sweep(), d.status, jobs).delete == []


def test_parameters_that_make_an_invalid_job_fail_that_trial_only() -> None:
    params = [{"path": "training.globalBatchSize", "values": [1, 4]},
              {"path": "training.microBatchSize", "values": [2]}]  # fmt: skip
    d = decide(sweep(parameters=params, earlyTermination=None), {}, {})
    assert created(d) == ["lr-rank-t1"]
    t0 = d.status["trials"][0]
    assert t0["phase"] == "Failed"
    assert "globalBatchSize must be at least microBatchSize" in t0["message"], t0
    assert d.events[0].reason == "InvalidTrial"


def test_the_sweep_ends_succeeded_with_a_best_trial_or_failed_without_one() -> None:
    status = decide(sweep(), {}, {}).status
    done = {
        f"lr-rank-t{i}": job(f"lr-rank-t{i}", "Succeeded", [(20, 1.0 - i / 10)]) for i in range(2)
    }
    status = decide(sweep(), status, done).status
    done.update(
        {f"lr-rank-t{i}": job(f"lr-rank-t{i}", "Succeeded", [(20, 1.0 - i / 10)]) for i in (2, 3)}
    )
    d = decide(sweep(), status, done)
    assert d.status["phase"] == "Succeeded" and d.status["best"]["trial"] == "lr-rank-t3"
    assert d.status["completionTime"] == "2026-03-01T12:00:00Z"
    assert [e.reason for e in d.events] == ["BestTrialFound"]
    assert decide(sweep(), d.status, done).events == []  # said once

    status = decide(sweep(maxTrials=2), {}, {}).status
    failed = {f"lr-rank-t{i}": job(f"lr-rank-t{i}", "Failed") for i in range(2)}
    d = decide(sweep(maxTrials=2), status, failed)
    assert d.status["phase"] == "Failed" and "no trial succeeded" in d.status["message"]


def test_a_trial_deleted_behind_the_sweeps_back_is_failed_not_remade() -> None:
    status = decide(sweep(), {}, {}).status
    jobs = {n: job(n, "Running") for n in ("lr-rank-t0", "lr-rank-t1")}
    status = decide(sweep(), status, jobs).status
    del jobs["lr-rank-t0"]
    d = decide(sweep(), copy.deepcopy(status), jobs)
    assert d.status["trials"][0]["phase"] == "Failed"
    assert d.status["trials"][0]["message"] == "its FineTuneJob was deleted"
    assert created(d) == ["lr-rank-t2"]
