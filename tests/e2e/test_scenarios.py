"""The whole system on one machine, with faults: real apiserver, controller manager, scheduler,
a real node (kubelet, containerd, runc, CoreDNS), the operator installed with helm from its built
image, trainer pods from the built trainer image, MinIO as the object store.

One world per module; each test applies its own FineTuneJob with kubectl and deletes it after.
Each scenario records its result, time to recover and steps lost; the table is printed at the
end of the module and written to <pytest basetemp>/e2e-scenarios.md, with the time a user waits
(helm install -> operator Ready, kubectl apply -> job Running). Time to recover: from the fault
(or the resume, or the operator's restart) until the job is back where it was (the new
attempt's worker 0 reports, on its metrics endpoint, the step reached before the fault; for the
object store: until the next checkpoint is committed). Steps lost: steps done before the fault
that were done again (step at the fault minus the step resumed from).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from harness import ControlPlane, eventually
from harness.images import Image
from harness.kueue import Kueue
from harness.node import Node
from tests.e2e.scenario import (
    World,
    job_manifest,
    opened_world,
    results_table,
)
from tests.k8s.queueing.world import apply, delete, platform_objects

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def world(
    control_plane: ControlPlane,
    crd_installed: str,
    k8s_api: client.ApiClient,
    real_node: Node,
    test_images: dict[str, Image],
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[World]:
    """Namespace with the S3 credentials Secret, MinIO, the operator by helm, tiny model."""
    work = tmp_path_factory.mktemp("scenarios")
    with opened_world(control_plane, k8s_api, real_node, test_images, work, "e2e") as w:
        try:
            yield w
        finally:
            _publish(request.config, w, tmp_path_factory.getbasetemp() / "e2e-scenarios.md")


def _publish(config: pytest.Config, world: World, path: Path) -> None:
    """Write the results table and the user's waits to a file and to the terminal."""
    table = results_table(world.results)
    waits = "; ".join(f"{k}: {v:.1f} s" for k, v in world.waits.items())
    if len(world.waits) == 2:
        waits += f"; together {sum(world.waits.values()):.1f} s (goal < 60 s)"
    table += f"\n\nobject store: {world.s3.kind}; what a user waits (images present): {waits}"
    path.write_text(table + "\n")
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        return
    with capture.global_and_fixture_disabled():
        reporter.ensure_newline()
        reporter.write_line(f"e2e scenarios ({path}):")
        for line in table.splitlines():
            reporter.write_line(line)


@pytest.fixture(autouse=True)
def _failed_row(world: World, request: pytest.FixtureRequest) -> Iterator[None]:
    """A scenario that did not record its row failed: say so in the table."""
    before = len(world.results)
    yield
    if len(world.results) == before:
        world.record(request.node.name.removeprefix("test_"), "FAILED", None, None)


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:5]}"


def test_happy_path(world: World) -> None:
    """kubectl apply -> Running with progress -> Succeeded; checkpoints, model, metrics of the
    trainer and of the operator pod; both containers' roots read-only in the runtime."""
    name = _unique("happy")
    bucket = world.new_bucket(name)
    started = time.monotonic()
    world.apply(job_manifest(name, bucket, world.s3, max_steps=30, every_steps=10))

    st = world.wait_phase(name, ("Running",), 180, poll=0.1)
    world.waits["kubectl apply -> job Running"] = time.monotonic() - started
    step = world.wait_step(name, 1, 2, 240)
    op_pod = world.operator.pod()["metadata"]["name"]
    for ns, pod, container in (
        (world.namespace, world.worker(name, 1, 0), "trainer"),
        (world.operator.namespace, op_pod, "operator"),
    ):
        spec = world.node.runtime_spec(ns, pod, container)
        assert spec["root"].get("readonly") is True, (pod, spec["root"])
        assert spec["process"]["user"]["uid"] == 65532, (pod, spec["process"]["user"])
    running = eventually(
        lambda: (
            (s := world.status(name)).get("phase") == "Running"
            and (s.get("progress") or {}).get("step", 0) >= 1
            and s
        ),
        60,
        "status.progress while Running",
    )
    assert running["progress"]["totalSteps"] == 30 and "loss" in running["progress"]
    scraped = world.trainer_metrics(name, 1, 1)
    assert scraped and re.search(
        r'^kubetune_trainer_loss\{job="' + name + r'",rank="1"\} ', scraped, re.M
    )
    op_metrics = world.operator.metrics()
    assert re.search(r'^kubetune_jobs\{phase="Running"\} [1-9]', op_metrics, re.M), op_metrics[
        :2000
    ]

    st = world.wait_phase(name, ("Succeeded",), 300)
    took = time.monotonic() - started
    assert st["attempt"] == 1 and st["output"]["uri"] == f"s3://{bucket}/model"
    assert world.s3.committed_steps(bucket) == [10, 20, 30]
    latest = st["checkpoints"]["latest"]
    assert latest["step"] == 30 and latest["uri"].startswith(f"s3://{bucket}/"), latest
    model_keys = world.s3.keys(bucket, "model/")
    assert {
        "model/adapter_config.json",
        "model/adapter_model.safetensors",
        "model/kubetune_run.json",
    } <= set(model_keys), model_keys
    card = world.run_card(bucket)
    assert card["training"]["steps"] == 30 and card["distributed"]["world_size"] == 2
    # results: the checkpoints with their losses, trained tokens, what was exported, events
    listed = st["checkpoints"]["committed"]
    assert [c["step"] for c in listed] == [30, 20, 10] and listed[0]["uri"] == latest["uri"]
    assert all(c["trainLoss"] > 0 for c in listed) and "evalLoss" in listed[0], listed
    assert st["trainedTokens"] == 30 * 8 * 64 and st["output"]["step"] == 30, st
    assert st["export"]["time"], st  # when the trainer finished the export
    events = client.CoreV1Api(world.api).list_namespaced_event(
        world.namespace, field_selector=f"involvedObject.name={name}"
    )
    posted = {e.reason for e in events.items if e.source.component == "kubetune-trainer"}
    assert {"ModelDownloadStarted", "ModelDownloaded", "CheckpointCommitted", "Evaluated",
            "ExportFinished"} <= posted, posted  # fmt: skip
    world.record(
        "1 happy path",
        "passed",
        None,
        0,
        f"30 steps in {took:.0f}s from apply (step {step} scraped while running)",
    )
    world.delete(name)


def test_worker_killed_gang_restart_resumes(world: World) -> None:
    """SIGKILL one worker mid-run: the gang restarts from the last committed checkpoint."""
    name = _unique("kill")
    bucket = world.new_bucket(name)
    world.apply(job_manifest(name, bucket, world.s3, max_steps=40, every_steps=10))
    eventually(lambda: 10 in world.s3.committed_steps(bucket), 240, "checkpoint 10 committed")
    world.wait_step(name, 1, 13, 120)
    at_kill = world.trainer_step(name, 1) or 0
    world.kill_worker(name, 1, 1)
    killed = time.monotonic()
    world.wait_step(name, 2, at_kill, 300)
    recover = time.monotonic() - killed

    st = world.wait_phase(name, ("Succeeded",), 300)
    assert st["attempt"] == 2 and st["restarts"] == 1, st
    assert st["lastFailure"]["pod"] == world.worker(name, 1, 1)
    assert st["lastFailure"]["exitCode"] == 137, st["lastFailure"]
    card = world.run_card(bucket)
    resumed = card["checkpoints"]["resumed_from"]["step"]
    assert card["training"]["steps"] == 40 and card["training"]["start_step"] == resumed
    lost = at_kill - resumed
    assert 0 <= lost <= 10, (at_kill, resumed)
    world.record(
        "2 worker killed mid-run",
        "passed",
        recover,
        lost,
        f"killed at step {at_kill}, resumed from {resumed}",
    )
    world.delete(name)


def test_suspend_checkpoints_and_resume_continues(world: World) -> None:
    """suspend: SIGTERM makes the gang save a checkpoint, pods go; resume continues from it."""
    name = _unique("suspend")
    bucket = world.new_bucket(name)
    world.apply(job_manifest(name, bucket, world.s3, max_steps=40, every_steps=1000))
    world.wait_step(name, 1, 8, 240)
    at_suspend = world.trainer_step(name, 1) or 0
    assert world.patch_spec(name, {"runPolicy": {"suspend": True}}).returncode == 0
    world.wait_phase(name, ("Suspended",), 60)
    eventually(lambda: not world.pods(name), 60, "workers gone after suspend")
    saved = world.s3.committed_steps(bucket)
    assert len(saved) == 1 and saved[0] >= at_suspend, (saved, at_suspend)

    assert world.patch_spec(name, {"runPolicy": {"suspend": False}}).returncode == 0
    resumed_at = time.monotonic()
    world.wait_step(name, 2, saved[0] + 1, 300)
    recover = time.monotonic() - resumed_at
    st = world.wait_phase(name, ("Succeeded",), 300)
    assert st["attempt"] == 2, st
    card = world.run_card(bucket)
    assert card["checkpoints"]["resumed_from"]["step"] == saved[0] == card["training"]["start_step"]
    assert card["training"]["steps"] == 40
    world.record(
        "5 suspend / resume",
        "passed",
        recover,
        0,
        f"suspended at step {at_suspend}, checkpoint {saved[0]}",
    )
    world.delete(name)


def test_malformed_data_fails_naming_the_record(world: World) -> None:
    """The data turns malformed, a worker dies: the retry fails naming file:line, checkpoints stay."""
    name = _unique("baddata")
    bucket = world.new_bucket(name)
    world.apply(job_manifest(name, bucket, world.s3, max_steps=40, every_steps=5, backoff_limit=1))
    eventually(lambda: 5 in world.s3.committed_steps(bucket), 240, "checkpoint 5 committed")
    lines = world.data.read_text().splitlines()
    lines[6] = '{"prompt": "map ka", "completion": '  # line 7: cut off
    world.s3.client().put_object(
        Bucket=bucket, Key="data/train.jsonl", Body="\n".join(lines).encode()
    )
    world.kill_worker(name, 1, 0)
    killed = time.monotonic()

    st = eventually(
        lambda: (s := world.status(name)).get("phase") == "Failed" and s, 300, "job Failed"
    )
    took = time.monotonic() - killed
    assert st["attempt"] == 2 and st["restarts"] == 1, st
    assert "train.jsonl:7" in st["message"], st["message"]
    assert "train.jsonl:7" in st["lastFailure"]["message"] and st["lastFailure"]["exitCode"] == 44
    failed = [cond for cond in st["conditions"] if cond["type"] == "Failed"]
    assert failed and failed[0]["status"] == "True" and "train.jsonl:7" in failed[0]["message"]
    assert 5 in world.s3.committed_steps(bucket), "checkpoints were not kept"
    reason = failed[0]["reason"]
    world.record(
        "7 malformed data", f"passed (Failed, {reason})", None, None,
        f"Failed {took:.0f}s after the worker was killed, not retried: ...{st['message'][-70:]}",
    )  # fmt: skip
    world.delete(name)


def test_gpu_out_of_memory_fails_at_once_naming_the_fix(world: World) -> None:
    """Rank 1 runs out of GPU memory at step 7 (the trainer's fault hook: these workers have no
    GPU): the job fails in attempt 1 without spending retries, names the fields to change, and
    keeps checkpoints 3 and 6, though worker 0 also failed as its peer went."""
    name = _unique("gpuoom")
    bucket = world.new_bucket(name)
    oom = {"KUBETUNE_FAULT_GPU_OOM": "1:7"}
    world.apply(job_manifest(name, bucket, world.s3, max_steps=20, every_steps=3, env=oom))
    st = eventually(
        lambda: (s := world.status(name)).get("phase") == "Failed" and s, 300, "job Failed"
    )
    failure = st["lastFailure"]
    assert st["attempt"] == 1 and st["restarts"] == 0, st
    assert (failure["reason"], failure["exitCode"]) == ("GPUOutOfMemory", 45), failure
    assert failure["pod"] == f"{name}-a1-1", failure
    assert "GPU out of memory at micro-batch" in st["message"], st["message"]
    assert "spec.training.microBatchSize" in st["message"], st["message"]
    assert world.s3.committed_steps(bucket) == [3, 6], "checkpoints were not kept"
    world.record(
        "9 GPU out of memory", "passed (Failed, GPUOutOfMemory)", None, None,
        f"attempt 1, not retried, checkpoints 3 and 6 kept: ...{st['message'][60:140]}...",
    )  # fmt: skip
    world.delete(name)


def test_spec_edit_of_a_running_job_is_refused(world: World) -> None:
    """The apiserver refuses a spec change of a running job and names the field."""
    name = _unique("edit")
    bucket = world.new_bucket(name)
    world.apply(job_manifest(name, bucket, world.s3, max_steps=400, every_steps=1000))
    world.wait_phase(name, ("Running",), 120)
    refused = world.patch_spec(name, {"training": {"maxSteps": 5}})
    assert refused.returncode != 0
    assert "spec.training is immutable" in refused.stderr, refused.stderr
    assert world.job(name)["spec"]["training"]["maxSteps"] == 400
    world.record(
        "8 spec edit refused", "passed", None, None, refused.stderr.strip().splitlines()[-1][:90]
    )
    world.delete(name)


# An image nobody can pull: a registry on the node's loopback with nothing listening (the
# kubelet asks containerd, containerd dials 127.0.0.1:1 and is refused: ErrImagePull).
MISSING_IMAGE = "127.0.0.1:1/kubetune/trainer-typo:0.0.0"


def test_image_that_cannot_be_pulled_is_reported_and_ends_the_attempt(world: World) -> None:
    """A typo in spec.resources.image keeps the workers Pending with no end of their own:
    ErrImagePull then ImagePullBackOff when the node may pull, ErrImageNeverPull under
    imagePullPolicy Never. After runPolicy.startupErrorTimeout each job says so: condition
    StartupError naming the worker and the image, a Warning event on the FineTuneJob,
    status.lastFailure; with failOnStartupError and backoffLimit 0 it ends Failed instead of
    waiting forever, and its pods are cleaned up."""
    jobs = {policy: _unique(f"badimage-{policy.lower()}") for policy in ("IfNotPresent", "Never")}
    for policy, name in jobs.items():
        bucket = world.new_bucket(name)
        manifest = job_manifest(name, bucket, world.s3, 10, 5, backoff_limit=0)
        manifest["spec"]["resources"].update(image=MISSING_IMAGE, imagePullPolicy=policy)
        manifest["spec"]["runPolicy"].update(startupErrorTimeout="15s", failOnStartupError=True)
        world.apply(manifest)
    applied = time.monotonic()

    notes = []
    for policy, name in jobs.items():
        st = eventually(
            lambda name=name: (s := world.status(name)).get("phase") == "Failed" and s,
            180,
            f"job {name} Failed",
        )
        took = time.monotonic() - applied
        failure = st["lastFailure"]
        assert failure["reason"] == "ImagePullError", (policy, failure)
        assert failure["pod"] in (world.worker(name, 1, 0), world.worker(name, 1, 1)), failure
        assert "could not start for 15s" in failure["message"], failure
        assert MISSING_IMAGE in failure["message"], failure
        startup = [cond for cond in st["conditions"] if cond["type"] == "StartupError"]
        assert startup and startup[0]["status"] == "True", st["conditions"]
        assert startup[0]["reason"] == "ImagePullError", startup
        assert MISSING_IMAGE in startup[0]["message"], startup
        assert st["attempt"] == 1 and st["restarts"] == 0, st
        warned = [e for e in _warnings(world, name) if e["reason"] == "ImagePullError"]
        assert warned and MISSING_IMAGE in warned[0]["message"], _warnings(world, name)
        eventually(lambda name=name: not world.pods(name), 120, f"pods of {name} cleaned up")
        notes.append(f"{policy}: Failed after {took:.0f}s ({failure['message'].split(': ')[1]})")
        world.delete(name)
    world.record(
        "14 image cannot be pulled", "passed (Failed, ImagePullError)", None, None,
        "; ".join(notes) + " (startupErrorTimeout 15s)",
    )  # fmt: skip


def _warnings(world: World, name: str) -> list[dict[str, Any]]:
    """The Warning events on the FineTuneJob `name`."""
    out = world.cp.kubectl(
        "get", "events", "-n", world.namespace, "-o", "json",
        "--field-selector", f"involvedObject.name={name},type=Warning",
    )  # fmt: skip
    return list(json.loads(out.stdout)["items"])


def test_operator_killed_and_restarted(world: World) -> None:
    """SIGKILL the operator pod's process mid-run; kubelet restarts it: the same two pods run on
    (no duplicate, none orphaned) and the job completes in attempt 1."""
    name = _unique("opkill")
    bucket = world.new_bucket(name)
    world.apply(job_manifest(name, bucket, world.s3, max_steps=200, every_steps=50))
    at_kill = world.wait_step(name, 1, 5, 240)
    before = {p["metadata"]["name"]: p["metadata"]["uid"] for p in world.pods(name)}
    restarts = world.operator.restarts()
    world.operator.kill()
    killed = time.monotonic()
    eventually(
        lambda: world.operator.restarts() > restarts and world.operator.ready(),
        180,
        "operator container restarted and Ready",
    )
    recover = time.monotonic() - killed
    after = {p["metadata"]["name"]: p["metadata"]["uid"] for p in world.pods(name)}
    assert len(before) == 2 and all(before.get(k) == v for k, v in after.items()), (before, after)
    st = world.wait_phase(name, ("Succeeded",), 300)
    assert st["attempt"] == 1 and st["restarts"] == 0, st
    ran = {log.parent.parent.name for log in world.pod_logs(name)}
    assert ran == {f"{world.namespace}_{n}_{u}" for n, u in before.items()}, ran
    assert world.run_card(bucket)["training"]["steps"] == 200
    world.record(
        "4 operator killed + restarted", "passed", recover, 0,
        f"killed at step {at_kill}; only the same 2 pods ever ran; attempt 1",
    )  # fmt: skip
    world.delete(name)


def test_object_store_down_30s(world: World) -> None:
    """The S3 server stops for 30 s mid-run: uploads are retried, the attempt goes on."""
    name = _unique("s3down")
    bucket = world.new_bucket(name)
    world.apply(job_manifest(name, bucket, world.s3, max_steps=40, every_steps=5))
    eventually(lambda: 5 in world.s3.committed_steps(bucket), 240, "checkpoint 5 committed")
    before = world.s3.committed_steps(bucket)
    at_stop = world.trainer_step(name, 1) or 0
    world.s3.stop()
    try:
        during = world.highest_step_within(name, 1, 30)
    finally:
        world.s3.start()
    back = time.monotonic()
    assert during is not None and during > at_stop, (at_stop, during)
    next_commit = max(before) + 5
    eventually(
        lambda: next_commit in world.s3.committed_steps(bucket), 120, "commit after the outage"
    )
    recover = time.monotonic() - back
    st = world.wait_phase(name, ("Succeeded",), 300)
    assert st["attempt"] == 1 and st["restarts"] == 0, st
    assert world.s3.committed_steps(bucket) == list(range(5, 41, 5))
    assert world.run_card(bucket)["training"]["steps"] == 40
    world.record(
        "6 S3 down 30 s", "passed", recover, 0,
        f"steps {at_stop} -> {during} while down; checkpoint {next_commit} committed after; attempt 1",
    )  # fmt: skip
    world.delete(name)


def test_worker_killed_during_upload_torn_checkpoint_unused(world: World) -> None:
    """A worker dies while checkpoint 10 is half uploaded: it is never committed or used, the
    retry resumes from checkpoint 5. The pause mid-upload is the trainer's fault hook."""
    name = _unique("torn")
    bucket = world.new_bucket(name)
    pause = {"KUBETUNE_FAULT_UPLOAD_PAUSE": "1:10:120"}
    world.apply(job_manifest(name, bucket, world.s3, max_steps=20, every_steps=5, env=pause))
    torn = "checkpoints/step-00000010/"
    eventually(lambda: world.s3.keys(bucket, torn), 240, "checkpoint 10 half uploaded")
    assert world.s3.committed_steps(bucket) == [5]
    at_kill = world.trainer_step(name, 1) or 10
    world.kill_worker(name, 1, 1)
    killed = time.monotonic()
    assert f"{torn}manifest.json" not in world.s3.keys(bucket, torn)
    world.wait_step(name, 2, at_kill, 300)
    recover = time.monotonic() - killed

    st = world.wait_phase(name, ("Succeeded",), 300)
    assert st["attempt"] == 2 and st["restarts"] == 1, st
    card = world.run_card(bucket)
    assert card["checkpoints"]["resumed_from"]["step"] == 5, card["checkpoints"]
    assert card["training"]["steps"] == 20
    assert world.s3.committed_steps(bucket) == [5, 10, 15, 20]  # 10 saved again by attempt 2
    world.record(
        "3 worker killed mid-upload", "passed", recover, at_kill - 5,
        f"killed at step {at_kill} during upload of 10; resumed from 5",
    )  # fmt: skip
    world.delete(name)


def test_memory_limit_exceeded_is_oomkilled(world: World) -> None:
    """A worker outgrows its memory limit: the kernel kills it, the runtime says OOMKilled and
    the operator classifies the failure as such (no retry left: Failed at once)."""
    name = _unique("oom")
    bucket = world.new_bucket(name)
    manifest = job_manifest(
        name, bucket, world.s3, max_steps=20, every_steps=10, backoff_limit=0,
        limits={"memory": "300Mi"},
    )  # fmt: skip
    world.apply(manifest)
    states: list[dict[str, Any]] = []

    def failed() -> dict[str, Any] | None:
        """The job's status once Failed, noting what the runtime says of each terminated
        container meanwhile (a finished job's workers are cleaned up)."""
        states.extend(
            cs["state"]["terminated"]
            for p in world.pods(name)
            for cs in p.get("status", {}).get("containerStatuses", [])
            if cs["state"].get("terminated")
        )
        s = world.status(name)
        return s if s.get("phase") == "Failed" else None

    st = eventually(failed, 300, "job Failed", poll=0.5)
    failure = st["lastFailure"]
    assert failure["reason"] == "OOMKilled", failure
    assert any(t["reason"] == "OOMKilled" for t in states), states
    world.record(
        "10 memory limit exceeded", "passed (Failed, OOMKilled)", None, None,
        f"limit 300Mi; {failure['pod']} exit {failure.get('exitCode')}: {st['message'][:70]}",
    )  # fmt: skip
    world.delete(name)


def test_pod_deleted_checkpoints_within_grace_and_job_continues(world: World) -> None:
    """kubectl delete of a worker pod: kubelet sends SIGTERM, the gang saves a checkpoint within
    the grace period, the next attempt resumes from it and the job completes."""
    name = _unique("delete")
    bucket = world.new_bucket(name)
    world.apply(job_manifest(name, bucket, world.s3, max_steps=40, every_steps=1000))
    at_delete = world.wait_step(name, 1, 6, 240)
    deleted = time.monotonic()
    world.cp.kubectl(
        "delete", "pod", world.worker(name, 1, 1), "-n", world.namespace, "--wait=false"
    )
    eventually(lambda: world.s3.committed_steps(bucket), 60, "a checkpoint saved on SIGTERM")
    saved = world.s3.committed_steps(bucket)
    took = time.monotonic() - deleted
    assert len(saved) == 1 and saved[0] >= at_delete, (saved, at_delete)
    world.wait_step(name, 2, saved[0] + 1, 300)
    recover = time.monotonic() - deleted
    st = world.wait_phase(name, ("Succeeded",), 300)
    assert st["attempt"] == 2, st
    card = world.run_card(bucket)
    assert card["checkpoints"]["resumed_from"]["step"] == saved[0] == card["training"]["start_step"]
    assert card["training"]["steps"] == 40
    world.record(
        "11 pod deleted (SIGTERM)", "passed", recover, 0,
        f"deleted at step {at_delete}, checkpoint {saved[0]} {took:.0f}s later (grace 60 s); "
        f"{st['lastFailure']['reason']}",
    )  # fmt: skip
    world.delete(name)


# Long enough that the workers still run when the runtime is back (about 15 steps/s here).
RESTART_STEPS = 900


def test_kubelet_and_containerd_restarted_mid_job(world: World) -> None:
    """The node's kubelet and containerd stop and start again mid-job: the workers run on
    under their shims, nothing is lost, no pod is duplicated, attempt 1 completes.

    The job is long enough to outlast the restart: a worker that exits while containerd is
    down is reported by the runtime as exit code 255, reason Unknown (the exit event is lost),
    and that is a failure of the attempt."""
    name = _unique("noderestart")
    bucket = world.new_bucket(name)
    world.apply(job_manifest(name, bucket, world.s3, max_steps=RESTART_STEPS, every_steps=300))
    at_stop = world.wait_step(name, 1, 5, 240)
    before = {p["metadata"]["name"]: p["metadata"]["uid"] for p in world.pods(name)}
    world.node.stop_kubelet_and_runtime()
    stopped = time.monotonic()
    during = world.highest_step_within(name, 1, 10)
    world.node.start_runtime()
    world.node.start_kubelet()
    recover = time.monotonic() - stopped
    assert during is not None and during > at_stop, (at_stop, during)
    after = {p["metadata"]["name"]: p["metadata"]["uid"] for p in world.pods(name)}
    assert after == before, (before, after)
    resumed = world.wait_step(name, 1, during + 1, 120)
    st = world.wait_phase(name, ("Succeeded",), 300)
    assert st["attempt"] == 1 and st["restarts"] == 0, world.debug(name)
    assert world.s3.committed_steps(bucket) == [300, 600, 900]
    assert world.run_card(bucket)["training"]["steps"] == RESTART_STEPS
    world.record(
        "12 kubelet + containerd restarted", "passed", recover, 0,
        f"stopped at step {at_stop}, step {during} while down, {resumed} after; same pods; "
        "attempt 1",
    )  # fmt: skip
    world.delete(name)


KUEUE_STEPS = 120


def test_kueue_preemption_checkpoints_and_the_job_resumes(world: World, kueue: Kueue) -> None:
    """Kueue (the real manager) admits one 2-worker job on a ClusterQueue with room for one. A
    higher-priority job preempts it: its workers get SIGTERM and save a checkpoint within the
    grace period, the job is queued again with the preemption in status (backoffLimit 0
    untouched), is admitted again once the other job is done, and resumes from that
    checkpoint. The operator (cluster-wide, as the chart installs it) finds Kueue's API, which
    came after it, by itself."""
    suffix = uuid.uuid4().hex[:5]
    platform = platform_objects(suffix, {}, [], {"cpu": WORKER_CPU_QUOTA})
    apply(world.cp, platform, world.namespace, world.workdir)
    low, high = _unique("research"), _unique("production")
    try:
        bucket, other_bucket = world.new_bucket(low), world.new_bucket(high)
        # Enough steps that the preemption (Kueue's eviction, the SIGTERM) lands mid-run even
        # on a loaded node.
        job = job_manifest(
            low, bucket, world.s3, max_steps=KUEUE_STEPS, every_steps=1000, backoff_limit=0
        )
        world.apply(queued_in(job, f"research-{suffix}"))
        at_preempt = world.wait_step(low, 1, 8, 300)
        other = job_manifest(high, other_bucket, world.s3, max_steps=6, every_steps=1000)
        world.apply(queued_in(other, f"production-{suffix}"))
        preempted = time.monotonic()
        seen = [at_preempt]

        def preempted_job() -> dict[str, Any] | None:
            step = world.trainer_step(low, 1)
            seen.extend([step] if step is not None else [])
            st = world.status(low)
            return st if st.get("preemptions") else None

        st = eventually(preempted_job, 120, "research preempted", poll=0.2)
        assert st["lastFailure"]["reason"] == "Preempted", st["lastFailure"]
        assert f"preempted by FineTuneJob {high}" in st["lastFailure"]["message"]
        assert (st["restarts"], st["preemptions"]) == (1, 1), "a preemption spent backoffLimit"
        cond = next(c for c in st["conditions"] if c["type"] == "Preempted")
        assert cond["status"] == "True" and high in cond["message"], cond
        queued = world.wait_phase(low, ("Queued",), 120)
        assert "LocalQueue gpu-queue" in queued["message"], queued["message"]
        saved = world.s3.committed_steps(bucket)
        # The checkpoint saved on SIGTERM holds the last step the trainer was seen at.
        assert len(saved) == 1 and saved[0] >= max(seen), (saved, max(seen))
        assert saved[0] < KUEUE_STEPS, f"preempted only after the last step ({saved[0]})"

        world.wait_phase(high, ("Succeeded",), 300)
        world.wait_step(low, 2, saved[0] + 1, 300)
        recover = time.monotonic() - preempted
        st = world.wait_phase(low, ("Succeeded",), 300)
        assert (st["attempt"], st["restarts"], st["preemptions"]) == (2, 1, 1), st
        card = world.run_card(bucket)
        assert card["checkpoints"]["resumed_from"]["step"] == saved[0]
        assert card["training"]["start_step"] == saved[0]
        assert card["training"]["steps"] == KUEUE_STEPS
        world.record(
            "13 Kueue preemption", "passed", recover, max(0, max(seen) - saved[0]),
            f"last seen at step {max(seen)}, checkpoint {saved[0]} saved on SIGTERM; "
            f"queued again, resumed after {high} finished",
        )  # fmt: skip
    finally:
        world.delete(low)
        world.delete(high)
        delete(world.cp, platform, world.namespace, world.workdir)


# Kueue's quota, not the node, decides: one job's two workers fit, a second job's do not.
WORKER_CPU = "100m"
WORKER_CPU_QUOTA = "200m"


def queued_in(manifest: dict[str, Any], priority_class: str) -> dict[str, Any]:
    """The job in LocalQueue gpu-queue (Kueue's label) with a WorkloadPriorityClass, its
    workers requesting WORKER_CPU each (what the ClusterQueue's quota counts)."""
    manifest["metadata"]["labels"] = {
        "kueue.x-k8s.io/queue-name": "gpu-queue",
        "kueue.x-k8s.io/priority-class": priority_class,
    }
    manifest["spec"]["resources"]["requests"] = {"cpu": WORKER_CPU}
    return manifest
