"""Checkpoints in a real S3 server: kill + resume equals an uninterrupted run (dropout included, under
ZeRO-2 and ZeRO-3), torn checkpoints are skipped, each rank fetches only its own shards, SIGTERM
leaves a committed checkpoint and exits 43, bad input exits 44 naming the line, GPU out of memory
exits 45 with the fields to change."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from kubetune_operator.api.spec import FineTuneJob
from kubetune_operator.reconcile.plan import OperatorSettings, resolve
from kubetune_operator.reconcile.render import render
from kubetune_trainer import gpu_oom
from kubetune_trainer.checkpoint.manager import FAULT_UPLOAD_PAUSE
from kubetune_trainer.checkpoint.manifest import committed, files_to_fetch
from kubetune_trainer.checkpoint.seal import Seal
from kubetune_trainer.config import StorageConfig
from kubetune_trainer.contract import EXIT_BAD_INPUT, EXIT_GPU_OOM, EXIT_PREEMPTED, GRACE_ENV
from kubetune_trainer.storage import S3Storage

from .harness import (
    LOGIT_ATOL,
    Run,
    config,
    finish,
    kill_group,
    kubetune_export,
    launch,
    probe_at,
    reload_logits,
    seal_of,
    start,
    wait_for,
)

pytestmark = pytest.mark.e2e

# Resumed weights must equal the uninterrupted run's. DeepSpeed restores fp32 master weights,
# Adam moments and the LR schedule exactly, the data order is a pure function of the step, the
# checkpoint carries each rank's RNG states (dropout masks continue where they were), and
# both runs do the same fp32 ops in the same order on the same machine, so the result is
# expected to be bit-identical; 1e-6 only tolerates a reordered gloo reduction (an update of
# one step at lr 3e-3 moves weights by ~1e-3, a thousand times more).
PARAM_ATOL = 1e-6


def store(s3: Any, bucket: str, prefix: str) -> S3Storage:
    return S3Storage(bucket, prefix, StorageConfig(endpoint=s3.endpoint))


def lora_cfg(
    workdir: Path,
    base: Path,
    data: Any,
    uri: str,
    endpoint: str,
    *,
    dropout: float = 0.1,
    zero_stage: int = 3,
    **training: Any,
) -> dict[str, Any]:
    return config(
        workdir, base, data,
        method={"type": "lora", "lora_r": 16, "lora_alpha": 32, "lora_dropout": dropout},
        training={"learning_rate": 3e-3, "max_steps": 30, "eval_every_steps": None, **training},
        deepspeed={"zero_stage": zero_stage},
        checkpoint={"uri": uri, "every_steps": 10, "keep_last": 5, "storage": {"endpoint": endpoint}},
        output={"format": "both"},
    )  # fmt: skip


def fake_torn(
    st: S3Storage,
    source: str,
    tag: str,
    seal: Seal,
    *,
    manifest: str,
    drop: str | None = None,
    corrupt: str | None = None,
) -> None:
    """Copy a committed checkpoint to a newer tag, then tear it: no manifest, a file missing, or flipped bytes."""
    client = st.client
    for key in st.list(source + "/"):
        name = key.split("/", 1)[1]
        if name == "manifest.json" and manifest == "absent":
            continue
        if drop and name.startswith(drop):
            continue
        body = st.get_bytes(key) or b""
        if name == "manifest.json":  # as the job itself would have committed it
            m = json.loads(body)
            m.update(tag=tag, step=int(tag.split("-")[1]))
            body = json.dumps(seal.sign(m)).encode()
        if corrupt and name.startswith(corrupt):
            body = bytes(b ^ 0xFF for b in body[:64]) + body[64:]
        client.put_object(Bucket=st.bucket, Key=f"{st.prefix}/{tag}/{name}", Body=body)


def weights(out: Path) -> dict[str, torch.Tensor]:
    return {
        **load_file(out / "model.safetensors"),
        **{
            f"adapter.{k}": v
            for k, v in load_file(out / "adapter" / "adapter_model.safetensors").items()
        },
    }


def assert_export_reproduces_step(run: Run, root: str, step: int, base: Path, s3: Any) -> None:
    """`kubetune export` of a mid-run LoRA checkpoint (ZeRO-3 shards, on CPU, no gang) gives
    the merged model and the adapter whose logits are the engine's at that step."""
    out = run.workdir / f"export-{step}"
    uri = f"{root}/step-{step:08d}"
    done = kubetune_export(uri, out, s3.env(), "--endpoint", s3.endpoint, "--format", "both")
    assert done.returncode == 0, done.stderr[-3000:]
    probe = probe_at(run.workdir, step)
    merged = reload_logits(out, probe["input_ids"])
    adapter = reload_logits(base, probe["input_ids"], adapter=out / "adapter")
    for got in (merged, adapter):
        assert torch.allclose(got, probe["logits"], atol=LOGIT_ATOL), (
            (got - probe["logits"]).abs().max()
        )


def kill_after_a_checkpoint(work: Path, cfg: dict[str, Any], env: dict[str, str]) -> None:
    """Start a run and SIGKILL all its ranks once a checkpoint is committed and step 15 passed."""
    began = time.monotonic()
    proc = start(work, cfg, env)

    def committed_and_past_15() -> bool:
        lines = (
            (work / "progress.jsonl").read_text().splitlines()
            if (work / "progress.jsonl").exists()
            else []
        )
        last = json.loads(lines[-1]) if lines else {}
        return last.get("step", 0) >= 15 and bool(last.get("checkpoint"))

    wait_for(committed_and_past_15, 180, "a committed checkpoint and step 15")
    kill_group(proc, signal.SIGKILL)
    killed = finish(proc, work, began)
    assert killed.code != 0, "the run finished before it could be killed"


def assert_same_as_uninterrupted(ref: Run, resumed: Run, step: int) -> float:
    """Same losses for the steps both runs did after the checkpoint, same final weights."""
    card = resumed.card()
    ref_losses = ref.card()["training"]["losses"][step:]
    assert card["training"]["losses"] == pytest.approx(ref_losses, abs=1e-6)
    a, b = weights(ref.workdir / "out"), weights(resumed.workdir / "out")
    assert a.keys() == b.keys()
    diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert diff <= PARAM_ATOL, diff
    return diff


@pytest.mark.slow
def test_kill_resume_from_s3_skips_torn_and_matches_uninterrupted(
    tmp_path: Path, tiny_base: Path, task_data: Any, s3_server: Any, s3_bucket: str
) -> None:
    env = s3_server.env()
    ref = launch(
        tmp_path / "ref",
        lora_cfg(
            tmp_path / "ref", tiny_base, task_data, f"s3://{s3_bucket}/ref", s3_server.endpoint
        ),
        env,
    )
    assert ref.code == 0, ref.log[-4000:]
    assert_export_reproduces_step(ref, f"s3://{s3_bucket}/ref", 10, tiny_base, s3_server)

    work = tmp_path / "run"
    cfg = lora_cfg(work, tiny_base, task_data, f"s3://{s3_bucket}/run", s3_server.endpoint)
    kill_after_a_checkpoint(work, cfg, env)

    st = store(s3_server, s3_bucket, "run")
    good, _ = committed(st, seal_of(work))
    latest = good[0]
    fake_torn(
        st, latest.tag, "step-00000025", seal_of(work), manifest="absent", drop="zero_pp_rank_1"
    )  # upload cut
    fake_torn(
        st,
        latest.tag,
        "step-00000026",
        seal_of(work),
        manifest="present",
        corrupt="zero_pp_rank_0_mp_rank_00_optim",
    )  # bad sha256
    fake_torn(
        st,
        latest.tag,
        "step-00000027",
        seal_of(work),
        manifest="present",
        drop="zero_pp_rank_1_mp_rank_00_model",
    )  # file lost

    resumed = launch(work, cfg, env)
    assert resumed.code == 0, resumed.log[-4000:]
    card = resumed.card()
    src = card["checkpoints"]["resumed_from"]
    assert src["step"] == latest.step, src
    assert {"step-00000025", "step-00000026", "step-00000027"} <= set(src["skipped"]), src[
        "skipped"
    ]
    assert "sha256" in " ".join(src["skipped"]["step-00000026"])
    assert card["training"]["start_step"] == latest.step

    # Each rank fetched the shared files and its own ZeRO-3 shards, not the other rank's.
    names = latest.manifest["files"]
    assert src["fetched"] == files_to_fetch(latest.manifest, 0, 2)
    assert any(n.startswith("zero_pp_rank_0_") for n in src["fetched"])
    assert not any(n.startswith("zero_pp_rank_1_") for n in src["fetched"])
    per_rank = card["checkpoints"]["files_fetched_per_rank"]
    assert per_rank == [len(files_to_fetch(latest.manifest, r, 2)) for r in (0, 1)]
    assert all(0 < n < len(names) for n in per_rank), (per_rank, sorted(names))

    diff = assert_same_as_uninterrupted(ref, resumed, latest.step)
    print(f"\nresume from {latest.tag}: max |param diff| {diff:.2e}; ref wall {ref.wall:.1f}s")


@pytest.mark.slow
def test_sigterm_commits_a_checkpoint_and_exits_preempted(
    tmp_path: Path, tiny_base: Path, task_data: Any, s3_server: Any, s3_bucket: str
) -> None:
    cfg = config(
        tmp_path, tiny_base, task_data,
        method={"type": "lora", "lora_dropout": 0.0},
        training={"max_steps": 5000, "eval_every_steps": None},
        checkpoint={"uri": f"s3://{s3_bucket}/ck", "storage": {"endpoint": s3_server.endpoint}},
    )  # fmt: skip
    began = time.monotonic()
    proc = start(tmp_path, cfg, s3_server.env())
    wait_for(
        lambda: (
            (tmp_path / "progress.jsonl").exists()
            and len((tmp_path / "progress.jsonl").read_text().splitlines()) >= 5
        ),
        180,
        "step 5",
    )
    proc.send_signal(signal.SIGTERM)  # what the kubelet sends to the container's first process
    run = finish(proc, tmp_path, began)
    assert run.code == EXIT_PREEMPTED, run.log[-4000:]
    good, skipped = committed(store(s3_server, s3_bucket, "ck"), seal_of(tmp_path))
    assert good and not skipped, (good, skipped)
    last = run.progress()[-1]
    assert last["event"] == "checkpoint" and last["checkpoint"]["step"] == good[0].step >= 5


@pytest.mark.slow
def test_sigterm_leaves_a_slow_upload_the_pods_grace_period(
    tmp_path: Path, tiny_base: Path, task_data: Any, s3_server: Any, s3_bucket: str
) -> None:
    """The preemption checkpoint's upload takes 45 s (injected), past torchrun's default 30 s
    shutdown timeout; the pod's grace period, which the operator renders into every worker,
    is what the trainer gets, and the checkpoint commits."""
    cfg = config(
        tmp_path, tiny_base, task_data,
        method={"type": "lora", "lora_dropout": 0.0},
        training={"max_steps": 5000, "eval_every_steps": None},
        checkpoint={"uri": f"s3://{s3_bucket}/slow", "storage": {"endpoint": s3_server.endpoint}},
    )  # fmt: skip
    env = {**s3_server.env(), FAULT_UPLOAD_PAUSE: "1:*:45", **grace_env(120)}
    began = time.monotonic()
    proc = start(tmp_path, cfg, env)
    wait_for(lambda: len(run_progress(tmp_path)) >= 3, 180, "step 3")
    proc.send_signal(signal.SIGTERM)
    run = finish(proc, tmp_path, began, timeout=300)
    assert run.code == EXIT_PREEMPTED, run.log[-4000:]
    good, skipped = committed(store(s3_server, s3_bucket, "slow"), seal_of(tmp_path))
    assert good and not skipped, (good, skipped)
    assert run.progress()[-1]["checkpoint"]["step"] == good[0].step >= 3


def grace_env(seconds: int) -> dict[str, str]:
    """The grace-period variable of a worker whose pod has terminationGracePeriodSeconds."""
    job = FineTuneJob.model_validate(
        {"metadata": {"name": "grace"}, "spec": {
            "model": {"source": "file:///m"}, "dataset": {"train": "file:///d"},
            "method": {"type": "full"}, "output": {"uri": "file:///o"}}}
    )  # fmt: skip
    plan = resolve(job, 1, OperatorSettings(termination_grace_seconds=seconds))
    pod = render(plan)[-1]
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert pod["spec"]["terminationGracePeriodSeconds"] == seconds
    return {GRACE_ENV: env[GRACE_ENV]}


def run_progress(workdir: Path) -> list[str]:
    path = workdir / "progress.jsonl"
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.slow
def test_malformed_record_exits_bad_input_naming_the_line(
    tmp_path: Path, tiny_base: Path, task_data: Any
) -> None:
    bad = tmp_path / "bad.jsonl"
    lines = task_data[0].read_text().splitlines()[:20]
    lines[6] = '{"prompt": "map ba", "completion": 7}'
    bad.write_text("\n".join(lines) + "\n")
    cfg = config(tmp_path, tiny_base, (bad, task_data[1]))
    run = launch(tmp_path, cfg, timeout=120)
    assert run.code == EXIT_BAD_INPUT, run.log[-3000:]
    assert f"{bad}:7: field 'completion' must be a string" in run.log


@pytest.mark.slow
def test_gpu_out_of_memory_on_one_rank_exits_45_with_advice_and_keeps_checkpoints(
    tmp_path: Path, tiny_base: Path, task_data: Any, s3_server: Any, s3_bucket: str
) -> None:
    """Rank 1 runs out of GPU memory at step 7 (injected: this machine has no GPU); the node
    reports 45 though torchrun itself exits 1, the checkpoints of steps 3 and 6 stay, and a job
    with a smaller micro-batch continues from step 6."""
    cfg = config(
        tmp_path, tiny_base, task_data,
        method={"type": "lora", "lora_dropout": 0.0},
        training={"max_steps": 20, "eval_every_steps": None},
        checkpoint={"uri": f"s3://{s3_bucket}/oom", "every_steps": 3,
                    "storage": {"endpoint": s3_server.endpoint}},
    )  # fmt: skip
    run = launch(tmp_path, cfg, {**s3_server.env(), gpu_oom.FAULT_GPU_OOM: "1:7"})
    assert run.code == EXIT_GPU_OOM, run.log[-4000:]
    assert "GPU out of memory at micro-batch 8 x 64 tokens" in run.log
    assert "spec.training.microBatchSize" in run.log
    good, _ = committed(store(s3_server, s3_bucket, "oom"), seal_of(tmp_path))
    assert [c.step for c in good] == [6, 3], good

    # What the failure message advises: a new job, half the micro-batch, the same global batch,
    # starting from the failed job's newest checkpoint.
    smaller = config(
        tmp_path / "smaller", tiny_base, task_data,
        method={"type": "lora", "lora_dropout": 0.0},
        training={"max_steps": 10, "eval_every_steps": None, "micro_batch_size": 4,
                  "global_batch_size": 16, "gradient_accumulation_steps": 2},
        checkpoint={"uri": f"s3://{s3_bucket}/oom-smaller", "resume": f"s3://{s3_bucket}/oom/{good[0].tag}",
                    "storage": {"endpoint": s3_server.endpoint}},
    )  # fmt: skip
    again = launch(tmp_path / "smaller", smaller, s3_server.env())
    assert again.code == 0, again.log[-4000:]
    assert again.card()["training"]["start_step"] == 6


@pytest.mark.slow
def test_kill_resume_with_dropout_under_zero2_matches_uninterrupted(
    tmp_path: Path, tiny_base: Path, task_data: Any, s3_server: Any, s3_bucket: str
) -> None:
    """ZeRO-2 keeps one model-states file that every rank reads and one optimizer shard per rank;
    dropout 0.2 makes the result depend on each rank's RNG, which must resume where it was."""
    env = s3_server.env()

    def cfg_for(name: str) -> dict[str, Any]:
        return lora_cfg(
            tmp_path / name, tiny_base, task_data, f"s3://{s3_bucket}/{name}",
            s3_server.endpoint, dropout=0.2, zero_stage=2,
        )  # fmt: skip

    ref = launch(tmp_path / "ref", cfg_for("ref"), env)
    assert ref.code == 0, ref.log[-4000:]
    kill_after_a_checkpoint(tmp_path / "run", cfg_for("run"), env)
    latest = committed(store(s3_server, s3_bucket, "run"), seal_of(tmp_path / "run"))[0][0]

    resumed = launch(tmp_path / "run", cfg_for("run"), env)
    assert resumed.code == 0, resumed.log[-4000:]
    src = resumed.card()["checkpoints"]["resumed_from"]
    assert src["step"] == latest.step, src
    assert "mp_rank_00_model_states.pt" in src["fetched"]
    assert "zero_pp_rank_0_mp_rank_00_optim_states.pt" in src["fetched"]
    assert not any(n.startswith("zero_pp_rank_1_") for n in src["fetched"]), src["fetched"]
    assert "rng_state_rank_00000.pt" in src["fetched"] and src["rng_restored"], src
    diff = assert_same_as_uninterrupted(ref, resumed, latest.step)
    print(f"\nZeRO-2, dropout 0.2, resume from {latest.tag}: max |param diff| {diff:.2e}")


class Planted:
    """Unpickling this object creates `marker` (a pickle may call anything it names)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (self.marker, "w"))


@pytest.mark.slow
def test_a_checkpoint_planted_in_the_store_is_never_unpickled(
    tmp_path: Path, tiny_base: Path, task_data: Any
) -> None:
    """Someone who can write the checkpoint store plants a newer "checkpoint" whose model
    states unpickle to code, with a manifest of the right sizes and checksums. The trainer
    refuses it (not signed with the namespace's key) and trains from step 0."""
    import hashlib

    store, marker = tmp_path / "store", tmp_path / "pwned"
    planted = store / "step-00000099"
    planted.mkdir(parents=True)
    torch.save({"module": Planted(marker)}, planted / "mp_rank_00_model_states.pt")
    files = {
        p.name: {"size": p.stat().st_size, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
        for p in planted.iterdir()
    }
    manifest = {"tag": planted.name, "step": 99, "world_size": 2, "files": files}
    (planted / "manifest.json").write_text(json.dumps(manifest))

    cfg = config(
        tmp_path / "run", tiny_base, task_data,
        training={"max_steps": 3, "eval_every_steps": None},
        checkpoint={"uri": f"file://{store}"},
    )  # fmt: skip
    run = launch(tmp_path / "run", cfg)
    assert not marker.exists(), "the planted pickle ran"
    assert run.code == 0, run.log[-4000:]
    assert "not resuming from checkpoint step-00000099: not signed" in run.log
    card = run.card()
    assert card["checkpoints"]["resumed_from"] is None
    assert card["training"]["start_step"] == 0 and card["training"]["steps"] == 3
    assert (planted / "mp_rank_00_model_states.pt").exists()  # not ours to delete either
