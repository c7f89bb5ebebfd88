"""`kubetune run` with a stand-in worker command: env, gang restarts, backoff, loss curve.

The stand-in plays a torchrun agent: it records the env it got, rank 0 reports progress like
the trainer, and it fails on purpose where the test says.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from kubetune_operator.api.spec import FineTuneJob
from kubetune_operator.local.gang import worker_argv, worker_env
from kubetune_operator.local.plan import local_plan
from kubetune_operator.local.runner import run_job, run_manifest
from kubetune_operator.reconcile.parse import InvalidSpec

pytestmark = pytest.mark.unit

STAND_IN = r"""
import json, os, sys
cfg = json.load(open(os.environ["KUBETUNE_CONFIG"]))
rank, attempt = int(os.environ["NODE_RANK"]), int(os.environ["KUBETUNE_ATTEMPT"])
out = os.path.dirname(os.environ["KUBETUNE_CONFIG"])
keys = ["MASTER_ADDR", "MASTER_PORT", "NNODES", "NODE_RANK", "NPROC_PER_NODE", "WORLD_SIZE", "EXTRA",
        "CUDA_VISIBLE_DEVICES", "KUBETUNE_GRACE_SECONDS"]
json.dump({k: os.environ.get(k) for k in keys}, open(f"{out}/env-{rank}.json", "w"))
if rank == 0:
    with open(cfg["reporting"]["progress_file"], "a") as f:
        for step in range(1, 4):
            f.write(json.dumps({"event": "step", "step": step, "loss": 3.0 / step, "evalLoss": 2.5, "evalStep": 0}) + "\n")
        f.write(json.dumps({"event": "step", "step": 4, "loss": 0.7, "evalLoss": 0.9, "evalStep": 4}) + "\n")
fail = os.environ.get("FAIL_UNTIL_ATTEMPT", "0")
failing = rank == 1 and attempt <= int(fail)
if failing and os.environ.get("FAIL_MESSAGE"):
    open(os.environ["KUBETUNE_TERMINATION_LOG"], "w").write(os.environ["FAIL_MESSAGE"])
sys.exit(int(os.environ.get("FAIL_CODE", "1")) if failing else 0)
"""


def manifest(tmp_path: Path, **run_policy: object) -> FineTuneJob:
    return FineTuneJob.model_validate(
        {
            "apiVersion": "kubetune.dev/v1alpha1",
            "kind": "FineTuneJob",
            "metadata": {"name": "local"},
            "spec": {
                "model": {"source": "file://model"},
                "dataset": {"train": "file://data/train.jsonl"},
                "method": {"type": "lora", "lora": {"r": 4}},
                "resources": {
                    "nodes": 2,
                    "gpusPerNode": 0,
                    "env": [{"name": "EXTRA", "value": "yes"}],
                },
                "output": {"uri": "file://out"},
                "runPolicy": {"backoffLimit": 1, **run_policy},
            },
        }
    )


def command() -> list[str]:
    return [sys.executable, "-c", STAND_IN]


def test_workers_get_the_pod_env_on_loopback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert (
        run_job(manifest(tmp_path), tmp_path / "run", tmp_path, console=False, command=command())
        == 0
    )
    envs = [json.loads((tmp_path / f"run/attempt-1/env-{r}.json").read_text()) for r in range(2)]
    assert [e["NODE_RANK"] for e in envs] == ["0", "1"]
    for e in envs:
        assert e["MASTER_ADDR"] == "127.0.0.1"
        assert (e["NNODES"], e["NPROC_PER_NODE"], e["WORLD_SIZE"], e["EXTRA"]) == (
            "2",
            "1",
            "2",
            "yes",
        )
    assert envs[0]["MASTER_PORT"] == envs[1]["MASTER_PORT"]
    assert (tmp_path / "run/loss.png").stat().st_size > 1000
    cfg = json.loads((tmp_path / "run/attempt-1/trainer.json").read_text())
    assert cfg["model"]["source"] == f"file://{tmp_path}/model"
    assert cfg["output"]["uri"] == f"file://{tmp_path}/out"
    assert cfg["reporting"]["progress_sink"] == "file"


def test_failed_worker_restarts_the_gang(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAIL_UNTIL_ATTEMPT", "1")
    assert (
        run_job(manifest(tmp_path), tmp_path / "run", tmp_path, console=False, command=command())
        == 0
    )
    assert (tmp_path / "run/attempt-2/env-1.json").exists()
    cfg = json.loads((tmp_path / "run/attempt-2/trainer.json").read_text())
    assert cfg["job"]["attempt"] == 2


def test_attempts_share_one_job_uid_and_tracking_writes_beside_local_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAIL_UNTIL_ATTEMPT", "1")
    doc = manifest(tmp_path).model_dump(by_alias=True, exclude_none=True)
    doc["spec"]["checkpoint"] = {"uri": "file://ck"}
    doc["spec"]["tracking"] = {"tensorboard": True}
    job = FineTuneJob.model_validate(doc)
    assert run_job(job, tmp_path / "run", tmp_path, console=False, command=command()) == 0
    cfgs = [json.loads((tmp_path / f"run/attempt-{a}/trainer.json").read_text()) for a in (1, 2)]
    assert cfgs[0]["job"]["uid"] and cfgs[0]["job"]["uid"] == cfgs[1]["job"]["uid"]
    assert cfgs[1]["tracking"]["tensorboard_uri"] == f"file://{tmp_path}/ck/tensorboard"


def test_backoff_limit_ends_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAIL_UNTIL_ATTEMPT", "9")
    assert (
        run_job(manifest(tmp_path), tmp_path / "run", tmp_path, console=False, command=command())
        == 1
    )
    assert (tmp_path / "run/attempt-2").exists() and not (tmp_path / "run/attempt-3").exists()


def test_bad_input_is_not_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAIL_UNTIL_ATTEMPT", "9")
    monkeypatch.setenv("FAIL_CODE", "44")
    assert (
        run_job(manifest(tmp_path), tmp_path / "run", tmp_path, console=False, command=command())
        == 1
    )
    assert not (tmp_path / "run/attempt-2").exists()


def test_failed_run_ends_with_the_trainers_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The worker's termination message (what the pod would show) is the run's last line."""
    monkeypatch.setenv("FAIL_UNTIL_ATTEMPT", "9")
    monkeypatch.setenv("FAIL_CODE", "44")
    monkeypatch.setenv("FAIL_MESSAGE", "data/train.jsonl:7: field 'completion' must be a string")
    assert (
        run_job(manifest(tmp_path), tmp_path / "run", tmp_path, console=False, command=command())
        == 1
    )
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == "error: data/train.jsonl:7: field 'completion' must be a string"


def test_failed_run_without_a_message_points_at_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FAIL_UNTIL_ATTEMPT", "9")
    assert (
        run_job(manifest(tmp_path), tmp_path / "run", tmp_path, console=False, command=command())
        == 1
    )
    last = capsys.readouterr().err.strip().splitlines()[-1]
    log = tmp_path / "run" / "attempt-2" / "worker-1.log"
    assert last == f"error: worker 1 exited 1 without a message; its output: {log}"


def test_pvc_is_refused_locally(tmp_path: Path) -> None:
    job = manifest(tmp_path).model_copy(deep=True)
    doc = job.model_dump(by_alias=True, exclude_none=True)
    doc["spec"]["dataset"]["train"] = "pvc://claim/train.jsonl"
    with pytest.raises(InvalidSpec, match=r"spec\.dataset\.train: pvc://"):
        local_plan(FineTuneJob.model_validate(doc), 1, tmp_path, tmp_path, False)


def test_local_run_passes_performance_through(tmp_path: Path) -> None:
    doc = manifest(tmp_path).model_dump(by_alias=True, exclude_none=True)
    doc["spec"]["training"] = {"performance": {"ligerKernels": "off", "fusedOptimizer": False}}
    plan = local_plan(FineTuneJob.model_validate(doc), 1, tmp_path, tmp_path, False)
    perf = json.loads(plan.trainer_config.to_json())["perf"]
    assert (perf["liger_kernels"], perf["fused_optimizer"]) == ("off", False)


def test_worker_command_is_the_trainer_launcher(tmp_path: Path) -> None:
    plan = local_plan(manifest(tmp_path), 1, tmp_path, tmp_path, False)
    env = worker_env(plan, 1, 29999, tmp_path / "c.json", {})
    assert (env["NODE_RANK"], env["MASTER_ADDR"], env["MASTER_PORT"]) == ("1", "127.0.0.1", "29999")
    argv = worker_argv(tmp_path / "c.json", python="py")
    assert argv == ["py", "-m", "kubetune_trainer.launch", "--config", str(tmp_path / "c.json")]


def test_run_manifest_reports_bad_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: kubetune.dev/v1alpha1\nkind: FineTuneJob\nmetadata: {name: x}\nspec: {model: {source: nope}}\n"
    )
    assert run_manifest(str(bad)) == 1
    assert "spec.model.source" in capsys.readouterr().err


def test_curve_from_progress_file(tmp_path: Path) -> None:
    from kubetune_operator.local.report import read_curve, summary

    assert (
        run_job(manifest(tmp_path), tmp_path / "run", tmp_path, console=False, command=command())
        == 0
    )
    curve = read_curve(tmp_path / "run/progress.jsonl")
    assert curve.train == [(1, 3.0), (2, 1.5), (3, 1.0), (4, 0.7)]
    assert curve.evals == [(0, 2.5), (4, 0.9)]
    assert summary(curve)[0] == "eval loss: 2.5000 (step 0, before training) -> 0.9000 (step 4)"


def test_summary_says_before_training_only_for_an_eval_before_training(tmp_path: Path) -> None:
    """Without periodic evaluations the only eval loss is the final one: not "before training"."""
    from kubetune_operator.local.report import read_curve, summary

    progress = tmp_path / "progress.jsonl"
    records = [{"event": "step", "step": s, "loss": 2.0 / s} for s in range(1, 4)]
    records.append({"event": "step", "step": 4, "loss": 0.4, "evalLoss": 0.8, "evalStep": 4})
    progress.write_text("".join(json.dumps(r) + "\n" for r in records))
    curve = read_curve(progress)
    assert curve.evals == [(4, 0.8)]
    lines = summary(curve)
    assert lines[0] == "eval loss: 0.8000 (step 4)"
    assert not any("before training" in line for line in lines)


def test_chat_sample_prompt_reads_as_chat(tmp_path: Path) -> None:
    """A chat-format job's sample shows its turns, not the Python repr of a message list."""
    from kubetune_operator.local.sample import first_prompt, prompt_lines

    data = tmp_path / "chat.jsonl"
    turns = [
        {"role": "system", "content": "cipher"},
        {"role": "user", "content": "map fu"},
        {"role": "assistant", "content": "ne ra di ga"},
    ]
    data.write_text(json.dumps({"messages": turns}) + "\n")
    prompt = first_prompt(data)
    assert prompt_lines(prompt) == ["prompt (chat):", "  system: cipher", "  user: map fu"]
    assert prompt.expected == "ne ra di ga" and prompt.messages == turns[:2]


def gpu_job(tmp_path: Path, nodes: int, gpus: int) -> FineTuneJob:
    doc = manifest(tmp_path).model_dump(by_alias=True, exclude_none=True)
    doc["spec"]["resources"].update(nodes=nodes, gpusPerNode=gpus)
    return FineTuneJob.model_validate(doc)


def fake_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gpus: int) -> None:
    """An nvidia-smi that lists `gpus` GPUs (this machine has none)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    smi = folder / "nvidia-smi"
    lines = "".join(f"GPU {i}: NVIDIA H100 80GB HBM3 (UUID: GPU-{i:04d})\\n" for i in range(gpus))
    smi.write_text(f"#!/bin/sh\nprintf '{lines}'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}:{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def worker_envs(tmp_path: Path, job: FineTuneJob) -> list[dict[str, str]]:
    assert run_job(job, tmp_path / "run", tmp_path, console=False, command=command()) == 0
    nodes = job.spec.resources.nodes
    return [
        json.loads((tmp_path / f"run/attempt-1/env-{r}.json").read_text()) for r in range(nodes)
    ]


def test_each_local_gpu_worker_gets_its_own_gpus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """2 workers x 2 GPUs on a 4-GPU machine: torchrun numbers each worker's ranks from local
    rank 0, so each worker must see its own 2 GPUs, not all four."""
    fake_nvidia_smi(tmp_path, monkeypatch, 4)
    envs = worker_envs(tmp_path, gpu_job(tmp_path, nodes=2, gpus=2))
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["0,1", "2,3"]
    assert [e["NPROC_PER_NODE"] for e in envs] == ["2", "2"]


def test_local_gpu_workers_slice_the_users_visible_devices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    envs = worker_envs(tmp_path, gpu_job(tmp_path, nodes=2, gpus=2))
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["4,5", "6,7"]


def test_too_few_local_gpus_are_refused_naming_the_fields(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_nvidia_smi(tmp_path, monkeypatch, 3)
    with pytest.raises(InvalidSpec, match=r"2 nodes x gpusPerNode 2 need 4 GPUs.*has 3"):
        run_job(
            gpu_job(tmp_path, 2, 2), tmp_path / "run", tmp_path, console=False, command=command()
        )


def test_local_workers_get_the_pods_grace_period(tmp_path: Path) -> None:
    envs = worker_envs(tmp_path, manifest(tmp_path))
    assert [e["KUBETUNE_GRACE_SECONDS"] for e in envs] == ["300", "300"]


def test_summary_announces_an_early_stop(tmp_path: Path) -> None:
    from kubetune_operator.local.report import read_curve, summary

    lines = [
        {"event": "step", "step": 1, "loss": 2.0, "evalLoss": 1.5},
        {"event": "step", "step": 3, "loss": 1.8, "evalLoss": 1.25},
        {"event": "step", "step": 6, "loss": 1.6, "evalLoss": 1.4},
        {"event": "step", "step": 9, "loss": 1.5, "evalLoss": 1.6},
        {"event": "end", "step": 9, "totalSteps": 60, "loss": 1.5, "evalLoss": 1.6,
         "stoppedEarly": True, "bestStep": 3, "exportedStep": 3, "percent": 100},
    ]  # fmt: skip
    path = tmp_path / "progress.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = summary(read_curve(path))
    assert "stopped early at step 9 of 60: the eval loss stopped improving" in out[-2]
    assert out[-1] == "exported the best weights: step 3, eval loss 1.2500"
