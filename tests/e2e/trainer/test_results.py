"""Results people can use, from one tracked job that overfits and is restarted halfway.

The job trains on data the test builds so that eval loss falls, reaches a minimum and rises
again (training records follow the validation cipher except for their last two words, which
follow another one: the model first learns the shared mapping, then the exception that
contradicts the validation set). It logs to a real MLflow server (sqlite, artifacts in the test
S3 server) and to TensorBoard event files beside its S3 checkpoints, exports the best checkpoint,
registers it in MLflow's model registry and pushes it to the local Hub server. Attempt 1 is
killed after a committed checkpoint; attempt 2 (same job uid) resumes.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from kubetune_trainer import tiny
from kubetune_trainer.config import StorageConfig
from kubetune_trainer.contract import HUB_PUSH_TOKEN_ENV
from kubetune_trainer.storage import S3Storage
from tests.fixtures.hub import HubServer
from tests.fixtures.mlflow import MlflowServer
from tests.fixtures.s3 import S3Server

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
    start,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

UID = "3f6c0a52-0d7e-4b8e-9a51-tracked-job"
MODEL_NAME = "tiny-cipher"
HUB_REPO = "org/tiny-cipher"
HUB_TOKEN = "hf_push_token"


def overfitting_data(folder: Path) -> tuple[Path, Path]:
    """Train records whose last two words follow cipher C, validation records all cipher B."""
    c = tiny.cipher("C")
    train = []
    for r in tiny.synthetic_records(64, "B", seed=11):
        words = r["completion"].split()
        words[-2] = c[words[-3]]
        words[-1] = c[words[-2]]
        train.append({"prompt": r["prompt"], "completion": " " + " ".join(words)})
    return (
        tiny.write_jsonl(folder / "train.jsonl", train),
        tiny.write_jsonl(folder / "val.jsonl", tiny.synthetic_records(64, "B", seed=2)),
    )


@dataclass
class Tracked:
    """The finished job and the servers it reported to."""

    run: Run
    cfg: dict[str, Any]
    s3: S3Server
    bucket: str
    mlflow: MlflowServer
    hub: HubServer

    def evals(self) -> list[tuple[int, float]]:
        """Every evaluation of the job (both attempts), from the MLflow run: latest per step."""
        history = self.mlflow.client().get_metric_history(self.run_id(), "eval/loss")
        return sorted({m.step: m.value for m in sorted(history, key=lambda m: m.timestamp)}.items())

    def run_id(self) -> str:
        runs = self.mlflow.client().search_runs(
            [self.experiment_id()], "tags.`kubetune.job_uid` = '" + UID + "'"
        )
        assert len(runs) == 1, [r.info.run_id for r in runs]
        return str(runs[0].info.run_id)

    def experiment_id(self) -> str:
        return str(self.mlflow.client().get_experiment_by_name("results").experiment_id)

    def listing(self) -> list[dict[str, Any]]:
        """status.checkpoints.committed as rank 0 last reported it."""
        last = [p for p in self.run.progress() if p.get("checkpoint")][-1]
        return list(last["checkpoint"]["committed"])


@pytest.fixture(scope="module")
def tracked(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_base: Path,
    s3_server: S3Server,
    mlflow_server: MlflowServer,
) -> Iterator[Tracked]:
    work = tmp_path_factory.mktemp("tracked")
    data = overfitting_data(work / "data")
    bucket = "tracked-ckpt"
    s3_server.client().create_bucket(Bucket=bucket)
    storage = {"endpoint": s3_server.endpoint}
    with HubServer(write_token=HUB_TOKEN) as hub:
        cfg = config(
            work, tiny_base, data,
            job={"name": "tracked", "uid": UID},
            training={"max_steps": 40, "learning_rate": 3e-3, "scheduler": "constant",
                      "warmup_ratio": 0.0, "eval_every_steps": 2, "micro_batch_size": 4,
                      "global_batch_size": 8},
            checkpoint={"uri": f"s3://{bucket}/ck", "storage": storage, "every_steps": 10,
                        "keep_last": 3},
            output={"select": "best", "registry": {"name": MODEL_NAME},
                    "push": {"repo": HUB_REPO, "private": False, "endpoint": hub.endpoint}},
            tracking={"mlflow": {"tracking_uri": mlflow_server.uri, "experiment": "results",
                                 "run_name": "tracked"},
                      "tensorboard_uri": f"s3://{bucket}/ck/tensorboard",
                      "tensorboard_storage": storage},
        )  # fmt: skip
        cfg["data"]["packing"] = False  # one record per sequence: 64 train sequences
        env = {
            **s3_server.env(),
            "HF_HOME": str(work / "hf"),
            "HF_HUB_OFFLINE": "0",
            HUB_PUSH_TOKEN_ENV: HUB_TOKEN,
        }
        began = time.monotonic()
        proc = start(work, cfg, env)

        def committed_and_past_15() -> bool:
            lines = (work / "progress.jsonl").read_text().splitlines()
            last = json.loads(lines[-1]) if lines else {}
            return last.get("step", 0) >= 15 and bool(last.get("checkpoint"))

        wait_for(
            lambda: (work / "progress.jsonl").exists() and committed_and_past_15(),
            600,
            "a committed checkpoint and step 15",
        )
        kill_group(proc, signal.SIGKILL)  # the whole gang dies, as when a node is lost
        assert finish(proc, work, began).code != 0
        cfg["job"]["attempt"] = 2
        run = launch(work, cfg, env, timeout=900)
        assert run.code == 0, run.log[-4000:]
        yield Tracked(run, cfg, s3_server, bucket, mlflow_server, hub)


def test_mlflow_has_one_run_with_params_metrics_and_artifacts_across_the_restart(
    tracked: Tracked, tmp_path: Path
) -> None:
    client = tracked.mlflow.client()
    run = client.get_run(tracked.run_id())  # exactly one run carries the job's uid
    assert run.info.status == "FINISHED" and run.info.run_name == "tracked"
    assert run.data.tags["kubetune.attempt"] == "2"
    params = run.data.params
    assert params["training.learning_rate"] == "0.003" and params["method.type"] == "full"
    assert params["output.select"] == "best" and params["deepspeed.zero_stage"] == "2"
    loss = client.get_metric_history(run.info.run_id, "train/loss")
    assert sorted({m.step for m in loss}) == list(range(1, 41))  # both attempts, every step
    assert [s for s, _ in tracked.evals()] == list(range(0, 41, 2))
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"kubetune_run.json", "loss.png", "model"} <= names
    card = json.loads(
        Path(
            client.download_artifacts(run.info.run_id, "kubetune_run.json", str(tmp_path))
        ).read_text()
    )
    assert card["job"]["uid"] == UID and card["export"]["select"] == "best"


def test_tensorboard_event_files_read_back_with_tensorboards_reader(
    tracked: Tracked, tmp_path: Path
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    store = S3Storage(tracked.bucket, "ck/tensorboard", StorageConfig(endpoint=tracked.s3.endpoint))
    files = store.list("")
    assert len(files) == 2, files  # one event file per attempt
    for name in files:
        store.get_file(name, tmp_path / name)
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    loss = events.Scalars("train/loss")
    # attempt 2 purged the steps attempt 1 did after the checkpoint it resumed from
    assert [e.step for e in loss] == list(range(1, 41))
    want = dict(tracked.evals())
    got = {e.step: e.value for e in events.Scalars("eval/loss")}
    assert got.keys() == want.keys()
    assert all(abs(got[s] - want[s]) < 1e-5 for s in want)


def test_status_lists_checkpoints_and_select_best_exports_the_minimum(tracked: Tracked) -> None:
    evals = tracked.evals()
    step, lowest = min(evals[1:], key=lambda e: (e[1], e[0]))  # after step 0
    assert step < 40 and evals[-1][1] > lowest, f"the schedule did not overfit: {evals}"
    # saved: every 10 steps, and at each evaluation that lowered the eval loss (select: best);
    # kept: the newest 3 (keepLast) and the best, which pruning spares
    improving, lowest_yet = [], float("inf")
    for at, value in evals[1:]:
        if value < lowest_yet:
            improving.append(at)
            lowest_yet = value
    saved = sorted({10, 20, 30, 40, *improving})
    listing = tracked.listing()
    assert [e["step"] for e in listing] == sorted({*saved[-3:], step}, reverse=True)
    best = [e for e in listing if e.get("best")]
    assert len(best) == 1 and best[0]["step"] == step
    assert best[0]["evalLoss"] == pytest.approx(lowest, abs=1e-6)
    assert best[0]["uri"] == f"s3://{tracked.bucket}/ck/step-{step:08d}"
    assert all({"step", "time", "trainLoss", "uri"} <= e.keys() for e in listing)
    card = tracked.run.card()
    assert card["export"]["step"] == step and card["export"]["select"] == "best"
    assert card["training"]["exported_step"] == step and card["export"]["from"] == "checkpoint"
    probe = probe_at(tracked.run.workdir, step)  # the engine's logits at that step
    logits = reload_logits(tracked.run.workdir / "out", probe["input_ids"])
    assert torch.allclose(logits, probe["logits"], atol=LOGIT_ATOL)
    final = probe_at(tracked.run.workdir)
    assert not torch.allclose(logits, final["logits"], atol=LOGIT_ATOL)  # not the last weights
    last = tracked.run.progress()[-1]
    assert last["event"] == "end" and (last["bestStep"], last["exportedStep"]) == (step, step)
    assert last["trainedTokens"] == 40 * 8 * 64  # steps x sequences x tokens, all ranks


def test_registered_model_version_loads_to_the_exported_logits(
    tracked: Tracked, tmp_path: Path
) -> None:
    import mlflow

    client = tracked.mlflow.client()
    [version] = client.search_model_versions(f"name = '{MODEL_NAME}'")
    assert version.run_id == tracked.run_id()
    assert tracked.run.progress()[-1]["export"]["registered"] == {
        "name": MODEL_NAME,
        "version": version.version,
    }
    mlflow.set_tracking_uri(tracked.mlflow.uri)
    folder = mlflow.artifacts.download_artifacts(
        f"models:/{MODEL_NAME}/{version.version}", dst_path=str(tmp_path)
    )
    probe = probe_at(tracked.run.workdir)
    registered = reload_logits(Path(folder), probe["input_ids"])
    exported = reload_logits(tracked.run.workdir / "out", probe["input_ids"])
    assert torch.equal(registered, exported)


def test_pushed_repo_downloads_with_huggingface_hub_and_loads(
    tracked: Tracked, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import snapshot_download

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    pushed = tracked.run.progress()[-1]["export"]["pushed"]
    assert pushed == {"repo": HUB_REPO, "commit": tracked.hub.repos[("model", HUB_REPO)].commit}
    folder = Path(
        snapshot_download(HUB_REPO, revision=pushed["commit"], endpoint=tracked.hub.endpoint)
    )
    probe = probe_at(tracked.run.workdir)
    exported = reload_logits(tracked.run.workdir / "out", probe["input_ids"])
    assert torch.equal(reload_logits(folder, probe["input_ids"]), exported)
    readme = (folder / "README.md").read_text()
    assert readme.startswith("---\n") and "kubetune" in readme and "| exported step |" in readme
    assert json.loads((folder / "kubetune_run.json").read_text())["job"]["uid"] == UID


def test_kubetune_export_of_a_mid_run_checkpoint_gives_the_engine_logits_at_that_step(
    tracked: Tracked, tmp_path: Path
) -> None:
    mid = next(e for e in tracked.listing() if not e.get("best") and e["step"] < 40)
    out = tmp_path / "exported"
    done = kubetune_export(mid["uri"], out, tracked.s3.env(), "--endpoint", tracked.s3.endpoint)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"step {mid['step']} of job tracked" in done.stdout
    probe = probe_at(tracked.run.workdir, mid["step"])
    logits = reload_logits(out, probe["input_ids"])
    assert torch.allclose(logits, probe["logits"], atol=LOGIT_ATOL), (
        (logits - probe["logits"]).abs().max()
    )
    card = json.loads((out / "kubetune_run.json").read_text())
    assert card["export"]["step"] == mid["step"] and (out / "tokenizer.json").is_file()
    assert (out / "README.md").is_file()
