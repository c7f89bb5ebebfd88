"""Resolving a job into a Plan: defaults, batch arithmetic, output, pvc:// and ftj:// sources."""

from __future__ import annotations

import dataclasses

import pytest

from kubetune_operator.api.spec import FineTuneJob
from kubetune_operator.reconcile.parse import InvalidSpec, parse_job
from kubetune_operator.reconcile.plan import (
    DefaultCheckpointStore,
    OperatorSettings,
    output_format,
    output_location,
    pvc_to_file,
    resolve,
)
from kubetune_operator.reconcile.render import render
from kubetune_trainer.config import PerfConfig
from tests.unit.operator.helpers import job, manifest

pytestmark = pytest.mark.unit
SETTINGS = OperatorSettings(trainer_image="registry.local/trainer:1")


@pytest.mark.parametrize(
    ("training", "resources", "global_batch", "accumulation"),
    [
        ({"microBatchSize": 2, "globalBatchSize": 32}, {"nodes": 2, "gpusPerNode": 4}, 32, 2),
        ({"microBatchSize": 2}, {"nodes": 2, "gpusPerNode": 4}, 16, 1),
        ({"microBatchSize": 1, "globalBatchSize": 8}, {"nodes": 2, "gpusPerNode": 0}, 8, 4),
        (
            {"microBatchSize": 4, "globalBatchSize": 64},
            {"nodes": 1, "gpusPerNode": 8, "processesPerNode": 2},
            64,
            8,
        ),
    ],
)
def test_batch_arithmetic(
    training: dict, resources: dict, global_batch: int, accumulation: int
) -> None:
    plan = resolve(job(training=training, resources=resources), 1, SETTINGS)
    assert plan.trainer_config.training.global_batch_size == global_batch
    assert plan.trainer_config.training.gradient_accumulation_steps == accumulation


def test_plan_fills_defaults() -> None:
    plan = resolve(job(), 3, SETTINGS)
    cfg = plan.trainer_config
    assert (plan.nodes, plan.processes_per_node, plan.world_size) == (2, 4, 8)
    assert plan.image == "registry.local/trainer:1"
    assert cfg.job.attempt == 3 and cfg.job.namespace == "team-a"
    assert cfg.method.lora_r == 16 and cfg.method.target_modules == ["q_proj", "v_proj"]
    assert cfg.training.epochs == 2.0
    assert cfg.checkpoint.uri == "s3://ckpt/llama-lora"
    assert cfg.checkpoint.storage.endpoint == "http://minio.storage:9000"
    assert cfg.output is not None and cfg.output.storage.endpoint == "http://minio.storage:9000"
    assert cfg.reporting.progress_sink == "kubernetes"
    assert plan.pod_names == ["llama-lora-a3-0", "llama-lora-a3-1"]


def test_performance_defaults_to_the_trainers_auto() -> None:
    assert resolve(job(), 1, SETTINGS).trainer_config.perf == PerfConfig()


@pytest.mark.parametrize(
    ("performance", "expected"),
    [
        (
            {"ligerKernels": "off", "varlenAttention": "on", "fusedOptimizer": False},
            PerfConfig(liger_kernels="off", varlen_attention="on", fused_optimizer=False),
        ),
        (
            {"ligerKernels": "on", "activationCheckpointing": "selective"},
            PerfConfig(liger_kernels="on", activation_checkpointing="selective"),
        ),
        ({"activationCheckpointing": "off"}, PerfConfig(activation_checkpointing="off")),
    ],
)
def test_performance_overrides_reach_the_trainer(performance: dict, expected: PerfConfig) -> None:
    training = {"epochs": 1, "performance": performance}
    assert resolve(job(training=training), 1, SETTINGS).trainer_config.perf == expected


def test_gradient_checkpointing_kept_beside_a_finer_activation_choice() -> None:
    training = {"gradientCheckpointing": True, "performance": {"activationCheckpointing": "full"}}
    cfg = resolve(job(training=training), 1, SETTINGS).trainer_config
    assert cfg.training.gradient_checkpointing is True
    assert cfg.perf.activation_checkpointing == "full"


def test_epochs_default_to_one_without_max_steps() -> None:
    assert resolve(job(training={}), 1, SETTINGS).trainer_config.training.epochs == 1.0
    cfg = resolve(job(training={"maxSteps": 50}), 1, SETTINGS).trainer_config.training
    assert (cfg.epochs, cfg.max_steps) == (None, 50)


@pytest.mark.parametrize(
    ("method", "output", "fmt"),
    [
        ({"type": "lora", "lora": {}}, {"uri": "s3://models/x"}, "adapter"),
        ({"type": "full"}, {"uri": "s3://models/x"}, "merged"),
        ({"type": "lora", "lora": {}}, {"uri": "s3://models/x", "format": "both"}, "both"),
    ],
)
def test_output_format(method: dict, output: dict, fmt: str) -> None:
    assert output_format(job(method=method, output=output).spec) == fmt


def test_output_defaults_under_checkpoint() -> None:
    doc = manifest()
    del doc["spec"]["output"]
    assert output_location(parse_job(doc).spec) == "s3://ckpt/llama-lora/output"


def test_pvc_sources_become_mounted_files() -> None:
    claims: list[str] = []
    assert (
        pvc_to_file("pvc://data/sets/a.jsonl", claims)
        == "file:///mnt/kubetune/pvc/data/sets/a.jsonl"
    )
    assert pvc_to_file("pvc://data/other", claims) == "file:///mnt/kubetune/pvc/data/other"
    assert claims == ["data"]
    plan = resolve(job(dataset={"train": "pvc://corpus/train.jsonl"}), 1, SETTINGS)
    assert plan.pvc_claims == ("corpus",)


def test_upstream_model_source() -> None:
    j = job(model={"source": "ftj://base"})
    with pytest.raises(InvalidSpec, match=r"spec\.model\.source"):
        resolve(j, 1, SETTINGS)
    assert (
        resolve(j, 1, SETTINGS, upstream_output="s3://models/base").trainer_config.model.source
        == "s3://models/base"
    )


def test_invalid_manifest_names_the_field() -> None:
    doc = manifest()
    doc["spec"]["resources"]["nodes"] = 0
    with pytest.raises(InvalidSpec, match=r"spec\.resources\.nodes"):
        parse_job(doc)


def test_model_and_data_never_use_the_checkpoint_store() -> None:
    """Only the output defaults to the checkpoint's store; model and data have their own."""
    model = {"source": "s3://models/base", "endpoint": "http://models.store:9000"}
    cfg = resolve(job(model=model), 1, SETTINGS).trainer_config
    assert cfg.model.storage.endpoint == "http://models.store:9000"
    assert cfg.model.storage.store == "model"
    assert cfg.data.storage.endpoint == "http://minio.storage:9000"  # the dataset's own field
    doc = manifest(model={"source": "s3://models/base"})
    del doc["spec"]["dataset"]["endpoint"]
    cfg = resolve(FineTuneJob.model_validate(doc), 1, SETTINGS).trainer_config
    assert cfg.model.storage.endpoint is None and cfg.data.storage.endpoint is None
    assert cfg.checkpoint.storage.endpoint == "http://minio.storage:9000"


def test_hf_model_and_data_with_different_tokens_are_refused() -> None:
    doc = manifest()
    doc["spec"]["dataset"]["train"] = "hf://datasets/org/data"
    doc["spec"]["dataset"]["credentialsSecret"] = "other-token"
    with pytest.raises(InvalidSpec, match=r"spec\.dataset\.credentialsSecret"):
        resolve(FineTuneJob.model_validate(doc), 1, SETTINGS)


def test_preference_settings_reach_the_trainer() -> None:
    """objective dpo, its loss settings and the preference format go to the trainer as written;
    what the manifest leaves out is the trainer's default, and sft jobs stay sft."""
    base = manifest()
    method = {**base["spec"]["method"], "objective": "dpo"}
    dataset = {**base["spec"]["dataset"], "format": "preference"}
    cfg = resolve(
        job(method={**method, "dpo": {"loss": "simpo", "beta": 2.5}}, dataset=dataset), 1, SETTINGS
    ).trainer_config
    assert cfg.method.objective == "dpo" and cfg.data.format == "preference"
    pref = cfg.method.preference
    assert (pref.loss, pref.beta, pref.label_smoothing, pref.simpo_gamma) == (
        "simpo",
        2.5,
        0.0,
        0.5,
    )
    robust = resolve(
        job(
            method={**method, "dpo": {"loss": "robust", "labelSmoothing": 0.2, "sftWeight": 0.5}},
            dataset=dataset,
        ),
        1,
        SETTINGS,
    ).trainer_config.method.preference
    assert (robust.loss, robust.label_smoothing, robust.beta) == ("robust", 0.2, 0.1)
    assert robust.sft_weight == 0.5 and pref.sft_weight == 0.0
    assert resolve(job(), 1, SETTINGS).trainer_config.method.objective == "sft"


def test_results_settings_reach_the_trainer_with_their_defaults() -> None:
    doc = manifest()
    doc["spec"]["training"]["evalEverySteps"] = 50
    doc["spec"]["output"] = {
        "uri": "s3://models/llama-lora",
        "select": "best",
        "register": {"name": "llama-lora"},
        "push": {"repo": "org/llama-lora"},
    }
    doc["spec"]["tracking"] = {"mlflow": {"trackingUri": "http://mlflow:5000"}, "tensorboard": True}  # fmt: skip
    cfg = resolve(FineTuneJob.model_validate(doc), 1, SETTINGS).trainer_config
    assert cfg.output is not None and cfg.output.select == "best"
    assert cfg.output.registry is not None and cfg.output.registry.name == "llama-lora"
    assert cfg.output.push is not None and (cfg.output.push.repo, cfg.output.push.private) == (
        "org/llama-lora",
        True,
    )
    ml = cfg.tracking.mlflow
    assert ml is not None and (ml.experiment, ml.run_name) == ("team-a", "llama-lora")
    # event files beside the checkpoints, through the checkpoint store's connection
    assert cfg.tracking.tensorboard_uri == "s3://ckpt/llama-lora/tensorboard"
    assert cfg.tracking.tensorboard_storage == cfg.checkpoint.storage
    plain = resolve(job(), 1, SETTINGS).trainer_config
    assert plain.output is not None and plain.output.select == "last"
    assert plain.tracking.mlflow is None and plain.tracking.tensorboard_uri is None


def test_lora_without_settings_takes_the_documented_defaults() -> None:
    """`method: {type: lora}` alone trains with r 16, alpha 32, dropout 0.05, all-linear."""
    method = resolve(job(method={"type": "lora"}), 1, SETTINGS).trainer_config.method
    assert (method.lora_r, method.lora_alpha, method.lora_dropout) == (16, 32, 0.05)
    assert (method.target_modules, method.use_dora) == (["all-linear"], False)


STORE = DefaultCheckpointStore(
    uri="s3://platform-ckpt/kubetune/", endpoint="http://minio:9000", credentials_secret="ckpt"
)


def test_job_without_checkpoint_saves_to_the_operators_default_store() -> None:
    """Its own folder (namespace/name/uid), only on suspend or preemption, resumed from; the
    store's keys go to the checkpoint store of the pods only."""
    doc = manifest()
    del doc["spec"]["checkpoint"]
    doc["spec"]["output"] = {"uri": "s3://models/out"}
    doc["metadata"]["uid"] = "1234-abcd"
    settings = dataclasses.replace(SETTINGS, default_checkpoint=STORE)
    plan = resolve(FineTuneJob.model_validate(doc), 2, settings)
    ck = plan.trainer_config.checkpoint
    assert ck.uri == "s3://platform-ckpt/kubetune/team-a/llama-lora/1234-abcd"
    assert (ck.resume, ck.every_steps, ck.every_minutes, ck.save_final) == (
        "auto",
        None,
        None,
        False,
    )
    assert ck.storage.endpoint == "http://minio:9000"
    assert ("checkpoint", "ckpt") in plan.s3_secrets
    assert plan.trainer_config.output is not None
    assert plan.trainer_config.output.storage.endpoint is None  # the output never uses it
    pod = next(o for o in render(plan) if o["kind"] == "Pod")
    refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"]["name"]
        for e in pod["spec"]["containers"][0]["env"]
        if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]
    }
    assert refs.get("KUBETUNE_S3_CHECKPOINT_ACCESS_KEY_ID") == "ckpt", refs


def test_spec_checkpoint_wins_over_the_default_store() -> None:
    settings = dataclasses.replace(SETTINGS, default_checkpoint=STORE)
    plan = resolve(job(), 1, settings)
    assert not str(plan.trainer_config.checkpoint.uri).startswith("s3://platform-ckpt")
    assert plan.trainer_config.checkpoint.save_final


def test_default_store_must_be_s3_or_pvc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBETUNE_DEFAULT_CHECKPOINT_URI", "https://bucket/x")
    with pytest.raises(ValueError, match="KUBETUNE_DEFAULT_CHECKPOINT_URI"):
        OperatorSettings.from_env()
    monkeypatch.setenv("KUBETUNE_DEFAULT_CHECKPOINT_URI", "s3://bucket/x")
    monkeypatch.setenv("KUBETUNE_DEFAULT_CHECKPOINT_SECRET", "keys")
    assert OperatorSettings.from_env().default_checkpoint == DefaultCheckpointStore(
        "s3://bucket/x", credentials_secret="keys"
    )
