"""The fine-tuning lifecycle on the whole system: real apiserver, a real node, the operator by
helm from its built image, trainer pods from the built CPU trainer image, MinIO.

- A FineTuneSweep: a 2x2 grid over learning rate and LoRA rank on the quickstart task; the
  deliberately bad learning rate's trials are stopped early by the median rule, the best trial
  is the one with the lowest eval loss, and an operator killed mid-sweep makes no trial twice.
- A FineTuneSchedule on new data: three data drops land (time advances by trigger, no clock is
  waited for); the second drop improves the benchmark and is promoted, the third, with corrupted
  labels, is worse and is not; the promoted URI never points at the worse model; an operator
  killed mid-schedule makes no run twice.

One world for the module (operator install, model, bucket); trials and runs are one CPU worker
each, a few dozen steps of the tiny model.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from harness import ControlPlane, eventually
from harness.images import Image
from harness.node import Node
from kubetune_operator.api import constants as c
from kubetune_trainer import tiny
from tests.e2e.scenario import (
    S3_SECRET,
    World,
    job_manifest,
    opened_world,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.long]
GOOD_LR, BAD_LR = 0.003, 1e-6


@pytest.fixture(scope="module")
def world(
    control_plane: ControlPlane,
    crd_installed: str,
    k8s_api: client.ApiClient,
    real_node: Node,
    test_images: dict[str, Image],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[World]:
    """Namespace with the S3 credentials Secret, MinIO, the operator by helm, tiny model."""
    work = tmp_path_factory.mktemp("lifecycle")
    with opened_world(control_plane, k8s_api, real_node, test_images, work, "life") as w:
        yield w


def template(world: World, bucket: str, max_steps: int, eval_every: int | None) -> dict[str, Any]:
    """One CPU worker, LoRA on the tiny model, output to its own store; no checkpoints."""
    spec = copy.deepcopy(job_manifest("t", bucket, world.s3, max_steps, 1)["spec"])
    del spec["checkpoint"]
    spec["resources"]["nodes"] = 1
    spec["training"]["globalBatchSize"] = spec["training"]["microBatchSize"]
    if eval_every:
        spec["training"]["evalEverySteps"] = eval_every
    spec["output"].update(endpoint=world.s3.endpoint, credentialsSecret=S3_SECRET)
    return {"spec": spec}


def jobs_of(world: World, label: str, name: str) -> dict[str, dict[str, Any]]:
    api = client.CustomObjectsApi(world.api)
    items = api.list_namespaced_custom_object(
        c.GROUP, c.VERSION, world.namespace, c.PLURAL, label_selector=f"{label}={name}"
    )["items"]
    return {j["metadata"]["name"]: j for j in items}


def restart_operator(world: World) -> None:
    """SIGKILL the operator; kubelet restarts it."""
    before = world.operator.restarts()
    world.operator.kill()
    eventually(lambda: world.operator.restarts() > before and world.operator.ready(), 180,
               "operator restarted and Ready")  # fmt: skip


# Long enough that a trial reports several evaluations before it could finish: the tiny model
# does 120 steps in about 20 s, between two of a trial's status reports.
TRIAL_STEPS = 400


def test_sweep_grid_finds_the_best_trial_and_stops_the_bad_learning_rate(world: World) -> None:
    name = f"grid-{uuid.uuid4().hex[:4]}"
    bucket = world.new_bucket(name)
    sweep = {
        "apiVersion": c.API_VERSION, "kind": c.SWEEP_KIND, "metadata": {"name": name},
        "spec": {
            "template": template(world, bucket, max_steps=TRIAL_STEPS, eval_every=10),
            "parameters": [{"path": "training.learningRate", "values": [GOOD_LR, BAD_LR]},
                           {"path": "method.lora.r", "values": [4, 8]}],
            "parallelism": 2,
            "earlyTermination": {"minEvals": 2, "minCompletedTrials": 2},
        },
    }  # fmt: skip
    world.apply(sweep)
    first = eventually(lambda: j if len(j := jobs_of(world, c.LABEL_SWEEP, name)) == 2 else None,
                       120, "the first two trials")  # fmt: skip
    uids = {n: j["metadata"]["uid"] for n, j in first.items()}
    world.wait_phase(f"{name}-t0", ("Running",), 300)
    restart_operator(world)  # mid-sweep

    def done() -> dict[str, Any] | None:
        st = world.kubetune_object(c.SWEEP_PLURAL, name).get("status") or {}
        if st.get("phase") == "Failed":
            raise AssertionError(f"sweep failed: {json.dumps(st, indent=1)}")
        return st if st.get("phase") == "Succeeded" else None

    st = eventually(done, 1500, "the sweep finished", poll=2)
    trials = {t["name"]: t for t in st["trials"]}
    print("\n" + "\n".join(
        f"{t['name']}: {t['parameters']} {t['phase']} step {t.get('step')} objective "
        f"{t.get('objective')} {t.get('message', '')}" for t in st["trials"]))  # fmt: skip
    assert sorted(trials) == [f"{name}-t{i}" for i in range(4)]
    # The deliberately bad learning rate is stopped early, well before its last step.
    bad = [t for t in trials.values() if t["parameters"]["training.learningRate"] == BAD_LR]
    assert all(t["phase"] == "Terminated" and t["step"] < TRIAL_STEPS for t in bad), bad
    assert all("worse than" in t["message"] for t in bad)
    # The best is the Succeeded trial with the lowest eval loss, its model where it says.
    good = [t for t in trials.values() if t["phase"] == "Succeeded"]
    assert len(good) == 2 and all(t["parameters"]["training.learningRate"] == GOOD_LR for t in good)
    lowest = min(good, key=lambda t: t["objective"])
    assert st["best"]["trial"] == lowest["name"] and lowest.get("best") is True
    for t in good:  # the objective is the trial's own final eval loss
        job_status = world.status(t["name"])
        assert t["objective"] == job_status["progress"]["evalLoss"]
    assert st["best"]["outputUri"] == f"s3://{bucket}/model/{lowest['name']}"
    keys = world.s3.keys(bucket, f"model/{lowest['name']}/")
    assert f"model/{lowest['name']}/adapter_model.safetensors" in keys, keys
    # An operator killed mid-sweep made no trial twice: the first two kept their uids.
    left = jobs_of(world, c.LABEL_SWEEP, name)
    assert all(left[n]["metadata"]["uid"] == uid for n, uid in uids.items())
    assert sorted(left) == sorted(t["name"] for t in good)  # stopped trials' jobs are gone
    out = world.cp.kubectl("get", "ftsweep", name, "-n", world.namespace).stdout
    assert "4/4 done: 2 succeeded, 2 terminated" in out and lowest["name"] in out, out


def drop(world: World, bucket: str, key: str, records: list[dict[str, Any]]) -> None:
    """New data lands under the watched prefix."""
    body = "".join(json.dumps(r) + "\n" for r in records).encode()
    world.s3.client().put_object(Bucket=bucket, Key=key, Body=body)


def corrupted(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Wrong labels: each completion follows the other cipher (task A, the one the base model
    knew), so training on them unlearns the task the benchmark measures. (Shuffling the
    completions among records is no corruption here: each completion is itself a chain of the
    right cipher, and a model still learning the task learns it from them just as well.)"""
    out = []
    for r in records:
        chain = tiny.cipher_chain(r["prompt"].removeprefix("map "), "A")
        out.append({"prompt": r["prompt"], "completion": " " + " ".join(chain[1:])})
    return out


def test_schedule_promotes_better_data_and_refuses_corrupted_labels(world: World) -> None:
    name = f"retrain-{uuid.uuid4().hex[:4]}"
    bucket = world.new_bucket(name)
    bench = list(tiny.synthetic_records(32, "B", seed=11))
    drop(world, bucket, "bench.jsonl", bench)
    spec = template(world, bucket, max_steps=24, eval_every=None)["spec"]
    spec["dataset"].pop("validationSplit")
    schedule = {
        "apiVersion": c.API_VERSION, "kind": c.SCHEDULE_KIND, "metadata": {"name": name},
        "spec": {
            "trigger": {"newData": {"prefix": f"s3://{bucket}/incoming/", "pollInterval": "10s"}},
            "template": {"spec": spec},
            "gate": {"benchmark": f"s3://{bucket}/bench.jsonl"},
        },
    }  # fmt: skip
    drop(world, bucket, "incoming/day-1/part.jsonl", list(tiny.synthetic_records(96, "B", seed=21)))
    world.apply(schedule)

    def run_done(run: str) -> Any:
        def check() -> dict[str, Any] | None:
            st = world.kubetune_object(c.SCHEDULE_PLURAL, name).get("status") or {}
            record = next((r for r in st.get("runs", []) if r["name"] == run), None)
            if record and record["phase"] == "Failed":
                raise AssertionError(f"{run} failed: {record}\n{world.debug(run)}")
            return st if record and record.get("promoted") is not None else None

        return eventually(check, 600, f"{run} gated", poll=2)

    st = run_done(f"{name}-r1")
    r1 = st["runs"][0]
    assert r1["dataUri"] == f"s3://{bucket}/incoming/day-1/" and r1["promoted"] is True, r1
    assert st["promoted"]["uri"] == f"s3://{bucket}/model/{name}-r1"

    drop(world, bucket, "incoming/day-2/part.jsonl", list(tiny.synthetic_records(96, "B", seed=22)))
    run2 = eventually(
        lambda: jobs_of(world, c.LABEL_SCHEDULE, name).get(f"{name}-r2"), 120, "run 2"
    )
    assert run2["spec"]["model"]["source"] == f"s3://{bucket}/model/{name}-r1"  # continues r1
    restart_operator(world)  # mid-schedule
    st = run_done(f"{name}-r2")
    r2 = st["runs"][1]
    assert r2["promoted"] is True and r2["candidate"]["evalLoss"] < r2["current"]["evalLoss"], r2
    assert r2["current"]["evalLoss"] == pytest.approx(r1["candidate"]["evalLoss"], rel=1e-4)
    assert st["promoted"]["uri"] == f"s3://{bucket}/model/{name}-r2"

    drop(world, bucket, "incoming/day-3/part.jsonl",
         corrupted(list(tiny.synthetic_records(96, "B", seed=23))))  # fmt: skip
    st = run_done(f"{name}-r3")
    r3 = st["runs"][2]
    print("\n" + "\n".join(f"{r['name']}: {r['dataUri']} {r['current']} -> {r['candidate']}: "
                           f"{'promoted' if r['promoted'] else 'not promoted'} ({r['reason']})"
                           for r in st["runs"]))  # fmt: skip
    assert r3["promoted"] is False and r3["candidate"]["evalLoss"] > r3["current"]["evalLoss"], r3
    assert "worse by" in r3["reason"]
    # The promoted model stays the better one, and is what the gate measured.
    assert (
        st["promoted"]["run"] == f"{name}-r2"
        and st["promoted"]["uri"] == f"s3://{bucket}/model/{name}-r2"
    )
    assert st["lastResult"] == "Rejected"
    assert all(
        len(r["dataSources"]) == 1 and len(r["dataSources"][0]["sha256"]) == 64 for r in st["runs"]
    )
    # Each drop made exactly one run, across the operator's restart.
    assert sorted(jobs_of(world, c.LABEL_SCHEDULE, name)) == [f"{name}-r{i}" for i in (1, 2, 3)]
    assert st["nextRun"] == 4
    out = world.cp.kubectl("get", "ftsched", name, "-n", world.namespace).stdout
    assert f"{name}-r3" in out and "Rejected" in out and f"{name}-r2" in out, out
