"""Rendering children: golden YAML for a 2-node LoRA job and a table of properties."""

from __future__ import annotations

import os
from typing import Any

import pytest
import yaml

from kubetune_operator.api import constants as c
from kubetune_operator.api.spec import FineTuneJob
from kubetune_operator.reconcile.plan import OperatorSettings, resolve
from kubetune_operator.reconcile.render import render
from kubetune_trainer.config import TrainerConfig
from kubetune_trainer.contract import GRACE_ENV
from tests.unit.operator.helpers import HERE, job, manifest

pytestmark = pytest.mark.unit
GOLDEN = HERE / "golden" / "lora-2node.yaml"
SETTINGS = OperatorSettings(trainer_image="kubetune/trainer:dev")


def objects(**overrides: Any) -> list[dict[str, Any]]:
    return render(resolve(job(**overrides), 1, SETTINGS))


def by_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def env_of(pod: dict[str, Any]) -> dict[str, Any]:
    return {
        e["name"]: e.get("value", e.get("valueFrom")) for e in pod["spec"]["containers"][0]["env"]
    }


def golden_view(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The objects with the TrainerConfig shown as the values the operator chose.

    Fields left at the trainer's own defaults are dropped from the view, so a new trainer
    setting with a default does not churn this file; the full JSON is checked below.
    """
    out = []
    for obj in objs:
        if obj["kind"] == "ConfigMap":
            obj = {**obj, "data": dict(obj["data"])}
            cfg = TrainerConfig.model_validate_json(obj["data"]["trainer.json"])
            obj["data"]["trainer.json"] = cfg.model_dump(mode="json", exclude_defaults=True)
        out.append(obj)
    return out


def test_golden_two_node_lora() -> None:
    """Byte-for-byte stable output (UPDATE_GOLDEN=1 rewrites the file after a deliberate change)."""
    text = yaml.safe_dump_all(golden_view(objects()), sort_keys=False, width=100)
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()


def test_config_map_holds_the_complete_trainer_config() -> None:
    plan = resolve(job(), 1, SETTINGS)
    data = by_kind(render(plan), "ConfigMap")[0]["data"]["trainer.json"]
    assert data == plan.trainer_config.to_json()
    assert TrainerConfig.model_validate_json(data) == plan.trainer_config


def test_every_child_is_owned_and_labelled() -> None:
    for obj in objects():
        ref = obj["metadata"]["ownerReferences"][0]
        assert ref["kind"] == "FineTuneJob" and ref["controller"] is True
        assert ref["uid"] == "0b7a7e52-6a0f-4f2e-9d1c-2a3b4c5d6e7f"
        assert obj["metadata"]["labels"][c.LABEL_JOB] == "llama-lora"
        assert obj["metadata"]["namespace"] == "team-a"


def test_worker_env_is_torchrun_rendezvous() -> None:
    pods = by_kind(objects(), "Pod")
    assert [p["metadata"]["name"] for p in pods] == ["llama-lora-a1-0", "llama-lora-a1-1"]
    for rank, pod in enumerate(pods):
        env = env_of(pod)
        assert env["MASTER_ADDR"] == "llama-lora-a1-0.llama-lora-workers.team-a.svc"
        assert env["MASTER_PORT"] == "29500"
        assert (env["NNODES"], env["NODE_RANK"], env["NPROC_PER_NODE"], env["WORLD_SIZE"]) == (
            "2",
            str(rank),
            "4",
            "8",
        )
        assert pod["spec"]["hostname"] == pod["metadata"]["name"]
        assert pod["spec"]["subdomain"] == "llama-lora-workers"


def test_workers_know_the_grace_period_their_pods_have() -> None:
    """The trainer lets torchrun wait this long for the ranks' preemption checkpoint."""
    plan = resolve(job(), 1, OperatorSettings(termination_grace_seconds=600))
    for pod in by_kind(render(plan), "Pod"):
        assert pod["spec"]["terminationGracePeriodSeconds"] == 600
        assert env_of(pod)[GRACE_ENV] == "600"


def test_pod_declares_the_metrics_port_of_every_local_rank() -> None:
    """4 processes per pod serve metrics on 9400..9403; each port is declared, uniquely named."""
    for pod in by_kind(objects(), "Pod"):
        ports = {p["name"]: p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]}
        assert ports == {
            "rendezvous": 29500,
            "metrics": 9400,
            "metrics-1": 9401,
            "metrics-2": 9402,
            "metrics-3": 9403,
        }


def test_secrets_are_references_never_values() -> None:
    objs = objects()
    env = env_of(by_kind(objs, "Pod")[0])
    assert env["KUBETUNE_S3_CHECKPOINT_ACCESS_KEY_ID"] == {
        "secretKeyRef": {"name": "s3-creds", "key": "AWS_ACCESS_KEY_ID", "optional": False}
    }
    assert env["HF_TOKEN"]["secretKeyRef"]["name"] == "hf-token"
    config = by_kind(objs, "ConfigMap")[0]["data"]["trainer.json"]
    assert "AWS_SECRET_ACCESS_KEY" not in config and "HF_TOKEN" not in config


def secret_refs(pod: dict[str, Any]) -> dict[str, tuple[str, str, bool]]:
    """env name -> (secret, key, optional) of every secretKeyRef variable."""
    out = {}
    for e in pod["spec"]["containers"][0]["env"]:
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            out[e["name"]] = (ref["name"], ref["key"], ref["optional"])
    return out


def test_each_store_reads_its_own_secret() -> None:
    refs = secret_refs(by_kind(objects(), "Pod")[0])
    assert refs["KUBETUNE_S3_DATASET_ACCESS_KEY_ID"] == ("data-creds", "AWS_ACCESS_KEY_ID", False)
    assert refs["KUBETUNE_S3_CHECKPOINT_SECRET_ACCESS_KEY"] == (
        "s3-creds",
        "AWS_SECRET_ACCESS_KEY",
        False,
    )
    assert refs["KUBETUNE_S3_OUTPUT_SESSION_TOKEN"] == ("s3-creds", "AWS_SESSION_TOKEN", True)
    assert refs["HF_TOKEN"] == ("hf-token", "HF_TOKEN", False)
    assert not any(n.startswith("KUBETUNE_S3_MODEL_") for n in refs)  # hf:// model: no S3 keys


def test_a_hub_token_is_never_read_for_s3_keys() -> None:
    """A job whose only secret is a hub token: no AWS key comes from it, so pods can start."""
    doc = manifest()
    del doc["spec"]["dataset"]["credentialsSecret"]
    doc["spec"]["checkpoint"] = {"uri": "pvc://ckpt/llama-lora"}
    doc["spec"]["output"] = {"uri": "pvc://models/llama-lora"}
    refs = secret_refs(render(resolve(FineTuneJob.model_validate(doc), 1, SETTINGS))[-1])
    assert refs == {
        "HF_TOKEN": ("hf-token", "HF_TOKEN", False),
        "KUBETUNE_CHECKPOINT_KEY": ("kubetune-checkpoint-key", "key", False),  # not S3 keys
    }


def test_tracking_and_registry_secrets_are_read_only_for_their_own_keys() -> None:
    doc = manifest()
    doc["spec"]["output"] = {
        "uri": "s3://models/l",
        "push": {"repo": "org/l", "credentialsSecret": "hf-write"},
    }
    doc["spec"]["tracking"] = {
        "mlflow": {"trackingUri": "https://mlflow.example", "credentialsSecret": "mlflow-auth"},
        "wandb": {"project": "p", "credentialsSecret": "wandb-key"},
    }
    refs = secret_refs(render(resolve(FineTuneJob.model_validate(doc), 1, SETTINGS))[-1])
    assert refs["MLFLOW_TRACKING_TOKEN"] == ("mlflow-auth", "MLFLOW_TRACKING_TOKEN", True)
    assert refs["MLFLOW_TRACKING_PASSWORD"] == ("mlflow-auth", "MLFLOW_TRACKING_PASSWORD", True)
    assert refs["WANDB_API_KEY"] == ("wandb-key", "WANDB_API_KEY", False)
    # the push token has a name of its own: HF_TOKEN stays the model's read token
    assert refs["KUBETUNE_HF_PUSH_TOKEN"] == ("hf-write", "HF_TOKEN", False)
    assert refs["HF_TOKEN"] == ("hf-token", "HF_TOKEN", False)


def test_role_is_limited_to_its_own_job_status_and_creating_events() -> None:
    role = by_kind(objects(), "Role")[0]
    own, events = role["rules"][:-1], role["rules"][-1]
    for rule in own:
        assert rule["resourceNames"] == ["llama-lora"]
        assert rule["apiGroups"] == [c.GROUP]
    writes = [r for r in own if set(r["verbs"]) - {"get", "list", "watch"}]
    assert writes == [
        {
            "apiGroups": [c.GROUP],
            "resources": ["finetunejobs/status"],
            "resourceNames": ["llama-lora"],
            "verbs": ["patch"],
        }
    ]
    # rank 0 posts events on its job (a create cannot be limited by name): nothing else
    assert events == {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]}


def test_pod_runs_as_the_image_user_with_every_cache_on_a_writable_volume() -> None:
    """The trainer image's user is 65532 with HOME /home/kubetune (trainer/Dockerfile): the pod
    runs as that user, and every cache it writes lies on an emptyDir, the root being read-only."""
    pod = by_kind(objects(), "Pod")[0]
    spec, ctr = pod["spec"], pod["spec"]["containers"][0]
    dockerfile = (HERE.parents[2] / "trainer" / "Dockerfile").read_text()
    assert "USER 65532:65532" in dockerfile and "HOME=/home/kubetune" in dockerfile
    assert spec["securityContext"]["runAsUser"] == 65532
    assert spec["securityContext"]["runAsGroup"] == 65532
    writable = {
        m["mountPath"]
        for m in ctr["volumeMounts"]
        if not m.get("readOnly")
        and "emptyDir" in next(v for v in spec["volumes"] if v["name"] == m["name"])
    }
    assert {"/tmp", "/home/kubetune", "/dev/shm"} <= writable
    env = env_of(pod)
    for var in (
        "HOME",
        "XDG_CACHE_HOME",
        "TORCH_EXTENSIONS_DIR",
        "TRITON_CACHE_DIR",
        "HF_HOME",
        "MPLCONFIGDIR",
    ):
        assert any(str(env[var]).startswith(d) for d in writable), (var, env[var])


def test_pod_is_restricted_and_placed() -> None:
    pod = by_kind(objects(), "Pod")[0]
    spec, ctr = pod["spec"], pod["spec"]["containers"][0]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert ctr["securityContext"]["allowPrivilegeEscalation"] is False
    assert ctr["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert ctr["securityContext"]["readOnlyRootFilesystem"] is True
    assert ctr["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert ctr["resources"]["requests"]["nvidia.com/gpu"] == "4"
    assert spec["restartPolicy"] == "Never"
    assert spec["terminationGracePeriodSeconds"] == 300
    assert spec["priorityClassName"] == "training"
    assert spec["imagePullSecrets"] == [{"name": "registry"}]
    assert spec["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert spec["serviceAccountName"] == "llama-lora-trainer"
    shm = next(v for v in spec["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "4Gi"}
    # Queued through its Workload: a Kueue label would have Kueue's pod integration count
    # the workers a second time.
    assert not [k for k in pod["metadata"]["labels"] if k.startswith("kueue.x-k8s.io/")]
    assert "annotations" not in pod["metadata"]


@pytest.mark.parametrize(
    ("resources", "check"),
    [
        (
            {"nodes": 1, "gpusPerNode": 0},
            lambda p: "nvidia.com/gpu" not in str(p["spec"]["containers"][0]["resources"]),
        ),
        (
            {"nodes": 1, "sharedMemory": "16Gi"},
            lambda p: p["spec"]["volumes"][1]["emptyDir"]["sizeLimit"] == "16Gi",
        ),
        (
            {"nodes": 1, "serviceAccountName": "mine"},
            lambda p: p["spec"]["serviceAccountName"] == "mine",
        ),
        (
            {"nodes": 1, "schedulerName": "volcano"},
            lambda p: p["spec"]["schedulerName"] == "volcano",
        ),
        (
            {"nodes": 1, "affinity": {"nodeAffinity": {}}},
            lambda p: p["spec"]["affinity"] == {"nodeAffinity": {}},
        ),
    ],
)
def test_resource_options(resources: dict, check: Any) -> None:
    doc = manifest(resources=resources, training={"microBatchSize": 1})
    pods = by_kind(render(resolve(FineTuneJob.model_validate(doc), 1, SETTINGS)), "Pod")
    assert len(pods) == 1 and check(pods[0])


def test_own_service_account_skips_the_per_job_identity() -> None:
    objs = objects(
        resources={"nodes": 1, "serviceAccountName": "mine"}, training={"microBatchSize": 1}
    )
    assert not by_kind(objs, "Role") and not by_kind(objs, "ServiceAccount")


def test_no_queue_no_kueue_labels() -> None:
    doc = manifest()
    del doc["spec"]["queue"]
    pod = by_kind(render(resolve(FineTuneJob.model_validate(doc), 1, SETTINGS)), "Pod")[0]
    assert not any(k.startswith("kueue") for k in pod["metadata"]["labels"])


def test_names_carry_the_attempt() -> None:
    objs = render(resolve(job(), 4, SETTINGS))
    assert [o["metadata"]["name"] for o in by_kind(objs, "Pod")] == [
        "llama-lora-a4-0",
        "llama-lora-a4-1",
    ]
    assert by_kind(objs, "ConfigMap")[0]["metadata"]["name"] == "llama-lora-a4-config"
    assert env_of(by_kind(objs, "Pod")[1])["KUBETUNE_ATTEMPT"] == "4"


def test_service_publishes_only_the_rendezvous_worker() -> None:
    """MASTER_ADDR names worker 0 under the Service; no other worker needs a DNS record, and
    selecting them would churn the EndpointSlice on every worker state change."""
    objs = objects()
    selector = by_kind(objs, "Service")[0]["spec"]["selector"]
    pods = by_kind(objs, "Pod")
    selected = [p["metadata"]["name"] for p in pods
                if selector.items() <= p["metadata"]["labels"].items()]  # fmt: skip
    assert selected == [pods[0]["metadata"]["name"]]
    master = env_of(pods[1])["MASTER_ADDR"]
    assert master.startswith(f"{pods[0]['spec']['hostname']}.{pods[0]['spec']['subdomain']}")
