"""The Kubernetes progress sink patches status.progress of a real FineTuneJob, throttled."""

from __future__ import annotations

from typing import Any

import pytest

from kubetune_operator.api import constants as c
from kubetune_trainer.progress import KubernetesSink, Progress

pytestmark = pytest.mark.k8s

JOB = {
    "apiVersion": c.API_VERSION,
    "kind": c.KIND,
    "metadata": {"name": "progress"},
    "spec": {
        "model": {"source": "s3://models/base"},
        "dataset": {"train": "s3://data/train.jsonl"},
        "method": {"type": "full"},
        "output": {"uri": "s3://out/progress"},
    },
}


def test_sink_writes_status_progress_through_the_status_subresource(
    k8s_api: Any, crd_installed: str, namespace: str
) -> None:
    from kubernetes import client

    api = client.CustomObjectsApi(k8s_api)
    api.create_namespaced_custom_object(c.GROUP, c.VERSION, namespace, c.PLURAL, JOB)
    sink = KubernetesSink("progress", namespace, interval=0.1, api=api)
    assert sink.throttle.interval == 10.0  # never more often than every 10 s
    sink.report(Progress(step=10, total_steps=40, epoch=0.5, loss=1.5, eval_loss=1.75, learning_rate=1e-3,
                         tokens_per_second=900.0, elapsed_seconds=20.0, attempt=1))  # fmt: skip
    sink.report(
        Progress(step=11, total_steps=40, epoch=0.55, elapsed_seconds=22.0)
    )  # throttled away
    got = api.get_namespaced_custom_object(c.GROUP, c.VERSION, namespace, c.PLURAL, "progress")
    p = got["status"]["progress"]
    assert (p["step"], p["totalSteps"], p["percent"], p["summary"]) == (10, 40, 25, "10/40 (25%)")
    assert (
        p["evalLoss"] == 1.75 and p["etaSeconds"] == 60 and p["eta"] == "1m0s" and p["attempt"] == 1
    )
    assert got["spec"]["method"]["type"] == "full"  # spec untouched
    committed = {
        "tag": "step-00000040",
        "step": 40,
        "uri": "s3://ck/step-00000040",
        "time": "2026-11-26T07:00:00Z",
        "count": 2,
    }
    sink.report(
        Progress(step=40, total_steps=40, epoch=2.0, elapsed_seconds=80.0, checkpoint=committed),
        force=True,
    )
    got = api.get_namespaced_custom_object(c.GROUP, c.VERSION, namespace, c.PLURAL, "progress")
    assert got["status"]["progress"]["percent"] == 100
    assert got["status"]["checkpoints"]["latest"] == {
        "uri": "s3://ck/step-00000040",
        "step": 40,
        "time": "2026-11-26T07:00:00Z",
    }
    assert got["status"]["checkpoints"]["count"] == 2


def test_a_run_stopped_early_leaves_a_final_state_in_status(
    k8s_api: Any, crd_installed: str, namespace: str
) -> None:
    """After reports with an ETA, the early stop's report leaves 100%, no ETA, and which steps
    were best and exported (fields the CRD schema keeps)."""
    from kubernetes import client

    api = client.CustomObjectsApi(k8s_api)
    api.create_namespaced_custom_object(c.GROUP, c.VERSION, namespace, c.PLURAL, JOB)
    sink = KubernetesSink("progress", namespace, interval=0.1, api=api)
    sink.report(Progress(step=60, total_steps=500, epoch=0.3, elapsed_seconds=60.0), force=True)
    got = api.get_namespaced_custom_object(c.GROUP, c.VERSION, namespace, c.PLURAL, "progress")
    assert got["status"]["progress"]["eta"] == "7m20s"
    sink.report(
        Progress(step=60, total_steps=500, epoch=0.3, elapsed_seconds=60.0, event="end",
                 stopped_early=True, best_step=40, exported_step=40),
        force=True,
    )  # fmt: skip
    got = api.get_namespaced_custom_object(c.GROUP, c.VERSION, namespace, c.PLURAL, "progress")
    p = got["status"]["progress"]
    assert (p["percent"], p["summary"]) == (100, "60/500 (stopped early)")
    assert (p["stoppedEarly"], p["bestStep"], p["exportedStep"]) == (True, 40, 40)
    assert "eta" not in p and "etaSeconds" not in p


def test_preference_progress_is_kept_by_the_apiserver(
    k8s_api: Any, crd_installed: str, namespace: str
) -> None:
    """A DPO job's rewards and accuracy survive the CRD schema (unknown fields would be pruned)."""
    from kubernetes import client

    api = client.CustomObjectsApi(k8s_api)
    spec = {
        **JOB["spec"],
        "dataset": {"train": "s3://data/pairs.jsonl", "format": "preference"},
        "method": {"type": "full", "objective": "dpo", "dpo": {"beta": 0.2}},
    }
    job = {**JOB, "metadata": {"name": "dpo-progress"}, "spec": spec}
    api.create_namespaced_custom_object(c.GROUP, c.VERSION, namespace, c.PLURAL, job)
    values = {"reference": "precomputed", "rewardChosen": 0.5, "rewardRejected": -0.25,
              "rewardMargin": 0.75, "accuracy": 0.875, "evalRewardChosen": 0.4,
              "evalRewardRejected": -0.2, "evalRewardMargin": 0.6, "evalAccuracy": 0.9375}  # fmt: skip
    sink = KubernetesSink("dpo-progress", namespace, interval=0.1, api=api)
    sink.report(
        Progress(step=5, total_steps=10, epoch=0.5, loss=0.4, preference=values), force=True
    )
    got = api.get_namespaced_custom_object(c.GROUP, c.VERSION, namespace, c.PLURAL, "dpo-progress")
    assert got["status"]["progress"]["preference"] == values
