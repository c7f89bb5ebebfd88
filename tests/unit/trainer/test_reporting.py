"""Progress snapshots fit the FineTuneJob status schema; throttling; exit codes; launcher."""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kubetune_trainer import launch, metrics, progress
from kubetune_trainer.__main__ import load_config, report_error
from kubetune_trainer.contract import EXIT_BAD_INPUT, EXIT_GPU_OOM, EXIT_PREEMPTED
from kubetune_trainer.errors import BadInputError

pytestmark = pytest.mark.unit


def snapshot() -> progress.Progress:
    return progress.Progress(step=25, total_steps=100, epoch=0.5, loss=1.25, eval_loss=1.5, learning_rate=1e-4,
                             tokens_per_second=1234.5, elapsed_seconds=50.0, attempt=2)  # fmt: skip


def test_status_progress_validates_against_the_operator_model() -> None:
    from kubetune_operator.api.status import Progress

    body = progress.status_progress(snapshot(), now=datetime(2026, 1, 1, tzinfo=UTC))
    parsed = Progress.model_validate(body)
    assert parsed.total_steps == 100 and parsed.percent == 25 and parsed.eval_loss == 1.5
    assert (
        body["etaSeconds"] == 150 and body["eta"] == "2m30s" and body["summary"] == "25/100 (25%)"
    )
    assert body["updatedAt"] == "2026-01-01T00:00:00Z"


def test_a_run_stopped_early_reports_a_final_state() -> None:
    """No 12% with an ETA once early stopping ended the run: 100%, no ETA, and the patch removes
    the ETA an earlier report left in status."""
    from kubetune_operator.api.status import Progress

    p = progress.Progress(step=60, total_steps=500, epoch=0.3, elapsed_seconds=60.0,
                          stopped_early=True, best_step=40, exported_step=40)  # fmt: skip
    body = progress.status_progress(p)
    assert (body["percent"], body["summary"]) == (100, "60/500 (stopped early)")
    assert (body["stoppedEarly"], body["bestStep"], body["exportedStep"]) == (True, 40, 40)
    assert "eta" not in body and "etaSeconds" not in body
    Progress.model_validate(body)
    patch = progress.status_patch(p)["status"]["progress"]
    assert patch["eta"] is None and patch["etaSeconds"] is None


def test_exit_code_matches_the_operator_constant() -> None:
    from kubetune_operator.api import constants

    assert EXIT_PREEMPTED == constants.EXIT_PREEMPTED


def test_throttle_lets_one_report_per_interval() -> None:
    now = [0.0]
    t = progress.Throttle(10, clock=lambda: now[0])
    assert t.ready(False)
    now[0] = 9.9
    assert not t.ready(False) and t.ready(True)
    now[0] = 20.0
    assert t.ready(False)


def test_kubernetes_sink_throttles_to_at_least_ten_seconds() -> None:
    patches: list[dict] = []

    class Api:  # records the call the real client would make
        def patch_namespaced_custom_object_status(self, group, version, ns, plural, name, body):  # type: ignore[no-untyped-def]
            patches.append({"path": (group, version, ns, plural, name), "body": body})

    sink = progress.KubernetesSink("job", "ns", interval=1, api=Api())
    sink.report(snapshot())
    sink.report(snapshot())
    sink.report(snapshot(), force=True)
    assert len(patches) == 2
    assert patches[0]["path"] == ("kubetune.dev", "v1alpha1", "ns", "finetunejobs", "job")
    assert patches[0]["body"]["status"]["progress"]["step"] == 25


def test_file_sink_writes_json_lines(tmp_path: Path) -> None:
    sink = progress.FileSink(str(tmp_path / "p.jsonl"))
    sink.report(snapshot())
    sink.report(snapshot())
    lines = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and lines[0]["event"] == "step" and lines[0]["loss"] == 1.25


def test_file_sink_says_which_step_the_eval_loss_was_measured_at(tmp_path: Path) -> None:
    """`kubetune run` labels an eval "before training" only when it was taken at step 0."""
    sink = progress.FileSink(str(tmp_path / "p.jsonl"))
    sink.report(progress.Progress(step=1, total_steps=4, epoch=0.1, eval_loss=2.0, eval_step=0))
    sink.report(progress.Progress(step=4, total_steps=4, epoch=0.4, eval_loss=1.0, eval_step=4))
    lines = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [(x["step"], x["evalStep"]) for x in lines] == [(1, 0), (4, 4)]


def test_bad_config_names_the_field(tmp_path: Path) -> None:
    p = tmp_path / "trainer.json"
    p.write_text(
        json.dumps(
            {
                "job": {"name": "j"},
                "model": {"source": "file:///m"},
                "data": {"train": "/d"},
                "method": {"type": "sgd"},
            }
        )
    )
    with pytest.raises(BadInputError, match=r"method\.type"):
        load_config(str(p))


def test_bad_input_goes_to_the_termination_log(tmp_path: Path) -> None:
    log = tmp_path / "termination-log"
    log.touch()  # the kubelet creates it in every container
    report_error("data x.jsonl:3: broken", str(log))
    assert log.read_text() == "data x.jsonl:3: broken"


def test_bad_input_outside_a_pod_creates_no_termination_log(tmp_path: Path) -> None:
    log = tmp_path / "termination-log"
    report_error("data x.jsonl:3: broken", str(log))
    assert not log.exists()


def test_launcher_reports_what_the_ranks_reported() -> None:
    assert launch.combine(1, [43, 43]) == EXIT_PREEMPTED
    assert launch.combine(1, [44, 0]) == EXIT_BAD_INPUT
    assert launch.combine(1, [45]) == EXIT_GPU_OOM  # the other rank was killed: no code left
    assert launch.combine(1, [44, 45]) == EXIT_BAD_INPUT
    assert launch.combine(0, [0, 0]) == 0
    assert launch.combine(1, [1, 43]) == 1
    args = launch.torchrun_args(
        {
            "NNODES": "2",
            "NODE_RANK": "1",
            "NPROC_PER_NODE": "4",
            "MASTER_ADDR": "w-0",
            "MASTER_PORT": "29500",
        },
        "c.json",
    )
    assert (
        args[args.index("--node-rank") + 1] == "1"
        and "--standalone" not in args
        and args[-2:] == ["--config", "c.json"]
    )
    assert "--standalone" in launch.torchrun_args({}, "c.json")


def test_metrics_port_per_local_rank() -> None:
    assert metrics.metrics_port(9400, 1, env={}) == 9401
    assert metrics.metrics_port(None, 0, env={"KUBETUNE_METRICS_PORT": "9500"}) == 9500
    assert metrics.metrics_port(None, 0, env={}) is None
    assert metrics.mfu(1000.0, 6_000_000, peak=1e12, world_size=1) == pytest.approx(0.006)
    assert metrics.mfu(1000.0, 6_000_000, peak=1e12, world_size=2) == pytest.approx(0.003)
    assert metrics.mfu(1000.0, 6_000_000, peak=None, world_size=1) is None


def test_trainer_gauge_and_benchmark_count_lora_flops_alike() -> None:
    """Frozen weights cost 4 FLOPs a token, trained ones 6: LoRA is not 6N."""
    from bench._gpu import runner, stats
    from kubetune_trainer import flops

    assert runner.flops_per_token is flops.flops_per_token
    lora = flops.flops_per_token(1000, 10, 1, 1, 1, "lora")
    assert lora == 4000 + 20 + 12
    assert metrics.mfu(1.0, lora, peak=1.0, world_size=1) == stats.mfu(1.0, lora, peak=1.0)


def test_launcher_puts_its_own_tools_first_on_path() -> None:
    env = launch.with_own_bin_first({"PATH": "/usr/bin:" + os.path.dirname(sys.executable)})
    assert env["PATH"].split(os.pathsep) == [os.path.dirname(sys.executable), "/usr/bin"]


def test_status_patch_carries_the_newest_committed_checkpoint() -> None:
    plain = progress.status_patch(snapshot())
    assert set(plain["status"]) == {"progress"}
    ck = {
        "tag": "step-00000020",
        "step": 20,
        "uri": "s3://b/step-00000020",
        "time": "2026-11-26T07:00:00Z",
    }
    p = snapshot()
    p.checkpoint = ck
    checkpoints = progress.status_patch(p)["status"]["checkpoints"]
    assert checkpoints == {
        "latest": {"uri": "s3://b/step-00000020", "step": 20, "time": "2026-11-26T07:00:00Z"}
    }  # no count known (pruning failed): the patch leaves status.checkpoints.count alone
    p.checkpoint = {**ck, "count": 3}
    checkpoints = progress.status_patch(p)["status"]["checkpoints"]
    assert checkpoints["count"] == 3 and checkpoints["latest"]["step"] == 20
    from kubetune_operator.api.status import CheckpointStatus

    assert CheckpointStatus.model_validate(checkpoints).count == 3
