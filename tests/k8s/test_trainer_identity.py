"""Rank 0 reports results with the per-job identity the operator renders (ServiceAccount, Role,
RoleBinding): the checkpoint list, trained tokens and export land in status (the CRD keeps every
field: the apiserver prunes unknown ones), and events land on the job, rate-limited."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness import ControlPlane
from kubetune_operator.api import constants as c
from kubetune_operator.api.spec import FineTuneJob
from kubetune_operator.reconcile import names
from kubetune_operator.reconcile.plan import OperatorSettings, resolve
from kubetune_operator.reconcile.render import role, role_binding, service_account
from kubetune_trainer.progress import KubernetesSink, Progress
from kubetune_trainer.tracking.events import KubernetesEvents, TokenBucket

pytestmark = pytest.mark.k8s


def job(name: str) -> dict[str, Any]:
    return {
        "apiVersion": c.API_VERSION,
        "kind": c.KIND,
        "metadata": {"name": name},
        "spec": {
            "model": {"source": "s3://models/base"},
            "dataset": {"train": "s3://data/train.jsonl", "validationSplit": 0.1},
            "method": {"type": "full"},
            "training": {"evalEverySteps": 10},
            "checkpoint": {"uri": "s3://ckpt/reporting"},
            "output": {"uri": "s3://models/reporting", "select": "best"},
        },
    }


COMMITTED = [
    {"step": 30, "time": "2026-11-26T07:00:00Z", "trainLoss": 0.5, "evalLoss": 0.9,
     "uri": "s3://ckpt/reporting/step-00000030"},
    {"step": 20, "time": "2026-11-26T06:59:00Z", "trainLoss": 0.7, "evalLoss": 0.8,
     "uri": "s3://ckpt/reporting/step-00000020", "best": True},
]  # fmt: skip


def test_per_job_identity_writes_results_status_and_events(
    control_plane: ControlPlane, k8s_api: Any, crd_installed: str, namespace: str, tmp_path: Path
) -> None:
    from kubernetes import client, config

    admin = client.CustomObjectsApi(k8s_api)
    created = admin.create_namespaced_custom_object(
        c.GROUP, c.VERSION, namespace, c.PLURAL, job("reporting")
    )
    admin.create_namespaced_custom_object(c.GROUP, c.VERSION, namespace, c.PLURAL, job("other"))
    plan = resolve(FineTuneJob.model_validate(created), 1, OperatorSettings())
    identity = [service_account(plan), role(plan), role_binding(plan)]
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "List", "items": identity}))  # fmt: skip
    kubeconfig = control_plane.kubeconfig_for_service_account(
        namespace, names.trainer_identity("reporting"), tmp_path / "trainer-kubeconfig"
    )
    as_trainer = config.new_client_from_config(config_file=str(kubeconfig))

    sink = KubernetesSink("reporting", namespace, 0.0, api=client.CustomObjectsApi(as_trainer))
    export = {"time": "2026-11-26T07:01:00Z", "registered": {"name": "m", "version": "3"},
              "pushed": {"repo": "org/m", "commit": "abc123"}}  # fmt: skip
    latest = {"tag": "step-00000030", **COMMITTED[0], "count": 2, "committed": COMMITTED}
    sink.report(
        Progress(step=30, total_steps=30, epoch=1.0, tokens_per_second=512.0,
                 checkpoint=latest, trained_tokens=61440, export=export, exported_step=20),
        force=True,
    )  # fmt: skip
    status = admin.get_namespaced_custom_object(
        c.GROUP, c.VERSION, namespace, c.PLURAL, "reporting"
    )["status"]
    assert status["checkpoints"]["committed"] == COMMITTED
    assert status["trainedTokens"] == 61440 and status["progress"]["tokensPerSecond"] == 512.0
    assert status["export"] == export and status["progress"]["exportedStep"] == 20

    events = KubernetesEvents(
        "reporting", namespace, created["metadata"]["uid"], as_trainer, TokenBucket(2, 0.0)
    )
    for step in (10, 20, 30):
        events.post("Evaluated", f"step {step}: eval loss 0.8", routine=True)
    events.post("ExportFinished", "model written to s3://models/reporting (step 20, best)")
    posted = client.CoreV1Api(k8s_api).list_namespaced_event(
        namespace, field_selector="involvedObject.name=reporting"
    )
    by_reason = {e.message: e.reason for e in posted.items}
    assert sorted(by_reason.values()) == ["Evaluated", "Evaluated", "ExportFinished"]
    assert "step 30: eval loss 0.8" not in by_reason  # it came too fast: left out, and said so
    assert any("1 earlier event(s) not posted" in m for m in by_reason if "model written" in m)
    assert {e.involved_object.uid for e in posted.items} == {created["metadata"]["uid"]}
    assert {e.source.component for e in posted.items} == {"kubetune-trainer"}

    # the identity reaches nothing but its own job's status
    other = client.CustomObjectsApi(as_trainer)
    with pytest.raises(client.ApiException) as refused:
        other.patch_namespaced_custom_object_status(
            c.GROUP, c.VERSION, namespace, c.PLURAL, "other", {"status": {"trainedTokens": 1}}
        )
    assert refused.value.status == 403
