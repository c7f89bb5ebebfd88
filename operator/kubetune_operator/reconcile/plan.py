"""Resolve a FineTuneJob into a frozen, complete Plan for one attempt.

Every default is filled in and every derived value computed here (gradient accumulation, output
location, pvc:// mounts, the model of an upstream job), so render and the local runner only
copy values and never decide anything.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal

from kubetune_operator.api import constants as c
from kubetune_operator.api.platform import PlatformPolicy, violations
from kubetune_operator.api.spec import FineTuneJob, FineTuneJobSpec, LoraSpec
from kubetune_operator.reconcile import names
from kubetune_operator.reconcile.parse import InvalidSpec
from kubetune_operator.reconcile.workload import Placement
from kubetune_trainer.config import (
    BenchmarkConfig,
    CheckpointConfig,
    DataConfig,
    DeepSpeedConfig,
    JobRef,
    MethodConfig,
    MlflowConfig,
    ModelConfig,
    OutputConfig,
    PerfConfig,
    PreferenceConfig,
    PushConfig,
    RegisterConfig,
    ReportingConfig,
    StorageConfig,
    TrackingConfig,
    TrainerConfig,
    TrainingConfig,
    WandbConfig,
)
from kubetune_trainer.contract import CONFIG_FILE_NAME, GRACE_ENV, StoreName
from kubetune_trainer.redact import redacted_spec

PVC_MOUNT_ROOT = "/mnt/kubetune/pvc"
CONFIG_DIR = "/etc/kubetune"
SCRATCH_DIR = "/tmp"
# The trainer image's user and HOME (trainer/Dockerfile): pods run as that user, with an
# emptyDir on HOME so that every cache below it is writable under a read-only root.
TRAINER_UID = 65532
HOME_DIR = "/home/kubetune"


@dataclass(frozen=True)
class DefaultCheckpointStore:
    """Where jobs without spec.checkpoint save the checkpoint of a suspend or a preemption.

    The platform configures it once (chart value trainer.defaultCheckpoint), as a managed
    fine-tuning service keeps its jobs' state without the user naming a bucket. Each job gets
    its own folder, <uri>/<namespace>/<name>/<uid>, so a re-created job of the same name never
    resumes another's state. The secret, when named, must exist in each job's namespace.
    """

    uri: str
    endpoint: str | None = None
    region: str | None = None
    credentials_secret: str | None = None

    def for_job(self, namespace: str, name: str, uid: str | None) -> str:
        """This job's own checkpoint folder under the store."""
        return "/".join(p for p in (self.uri.rstrip("/"), namespace, name, uid) if p)

    @classmethod
    def from_env(cls) -> DefaultCheckpointStore | None:
        """KUBETUNE_DEFAULT_CHECKPOINT_{URI,ENDPOINT,REGION,SECRET}; None without a URI."""
        env = os.environ
        uri = env.get("KUBETUNE_DEFAULT_CHECKPOINT_URI")
        if not uri:
            return None
        if not uri.startswith(("s3://", "pvc://")):
            raise ValueError(f"KUBETUNE_DEFAULT_CHECKPOINT_URI {uri!r}: must be s3:// or pvc://")
        return cls(
            uri=uri,
            endpoint=env.get("KUBETUNE_DEFAULT_CHECKPOINT_ENDPOINT") or None,
            region=env.get("KUBETUNE_DEFAULT_CHECKPOINT_REGION") or None,
            credentials_secret=env.get("KUBETUNE_DEFAULT_CHECKPOINT_SECRET") or None,
        )


@dataclass(frozen=True)
class OperatorSettings:
    """Operator-wide defaults a job does not set itself."""

    trainer_image: str = "kubetune/trainer:dev"
    image_pull_policy: str | None = None
    termination_grace_seconds: int = 300
    progress_interval_seconds: float = 10.0
    network_policy: bool = False
    """Give every job a NetworkPolicy: its workers take connections only from each other, and
    metrics scrapes only from metrics_namespace."""
    metrics_namespace: str | None = None
    policy: PlatformPolicy = field(default_factory=PlatformPolicy)
    """What jobs may use (KUBETUNE_POLICY), checked before a job's first attempt."""
    default_checkpoint: DefaultCheckpointStore | None = None
    coscheduling_scheduler: str = "scheduler-plugins-scheduler"
    """schedulerName of gangs with scheduler coscheduling (scheduler-plugins' chart default)."""
    volcano_scheduler: str = "volcano"
    """schedulerName of gangs with scheduler volcano."""

    @classmethod
    def from_env(cls) -> OperatorSettings:
        """Settings from KUBETUNE_TRAINER_IMAGE, KUBETUNE_GRACE_SECONDS, KUBETUNE_NETWORK_POLICY,
        KUBETUNE_METRICS_NAMESPACE, KUBETUNE_POLICY, KUBETUNE_DEFAULT_CHECKPOINT_*,
        KUBETUNE_COSCHEDULING_SCHEDULER and KUBETUNE_VOLCANO_SCHEDULER (the chart sets them)."""
        return cls(
            trainer_image=os.environ.get("KUBETUNE_TRAINER_IMAGE", cls.trainer_image),
            image_pull_policy=os.environ.get("KUBETUNE_TRAINER_IMAGE_PULL_POLICY") or None,
            termination_grace_seconds=int(os.environ.get(GRACE_ENV, cls.termination_grace_seconds)),
            network_policy=os.environ.get("KUBETUNE_NETWORK_POLICY", "false") == "true",
            metrics_namespace=os.environ.get("KUBETUNE_METRICS_NAMESPACE") or None,
            policy=PlatformPolicy.from_env(),
            default_checkpoint=DefaultCheckpointStore.from_env(),
            coscheduling_scheduler=os.environ.get("KUBETUNE_COSCHEDULING_SCHEDULER")
            or cls.coscheduling_scheduler,
            volcano_scheduler=os.environ.get("KUBETUNE_VOLCANO_SCHEDULER") or cls.volcano_scheduler,
        )

    def gang_scheduler(self, scheduler: str) -> str:
        """The schedulerName a gang of `scheduler` (coscheduling, volcano) goes to."""
        return (
            self.coscheduling_scheduler if scheduler == "coscheduling" else self.volcano_scheduler
        )


@dataclass(frozen=True)
class Plan:
    """Everything needed to render (or run locally) one attempt of one job."""

    name: str
    namespace: str
    uid: str | None
    attempt: int
    spec: FineTuneJobSpec
    image: str
    nodes: int
    processes_per_node: int
    world_size: int
    master_port: int
    grace_seconds: int
    trainer_config: TrainerConfig
    image_pull_policy: str | None = None
    pvc_claims: tuple[str, ...] = field(default_factory=tuple)
    s3_secrets: tuple[tuple[StoreName, str], ...] = ()
    """(store, secret) for each s3:// store with a credentialsSecret: its keys go to that store."""
    hub_token_secret: str | None = None
    """The secret whose HF_TOKEN the hf:// model or data read; never read for S3 keys."""
    network_policy: bool = False
    """Render the job's NetworkPolicy (OperatorSettings.network_policy)."""
    metrics_namespace: str | None = None
    """The namespace allowed to scrape the workers' metrics port, if any."""
    mlflow_secret: str | None = None
    """tracking.mlflow's secret: its MLFLOW_TRACKING_* keys go to the workers."""
    wandb_secret: str | None = None
    """tracking.wandb's secret: its WANDB_API_KEY goes to the workers."""
    push_secret: str | None = None
    """output.push's secret: its HF_TOKEN becomes the workers' push token."""
    scheduler_name: str | None = None
    """resources.schedulerName, else the gang scheduler's name, else the cluster default."""
    node_selector: dict[str, str] = field(default_factory=dict)
    """resources.nodeSelector plus the node labels of the flavors Kueue admitted the job on."""
    tolerations: tuple[dict[str, Any], ...] = ()
    """resources.tolerations plus the tolerations of the admitted flavors."""

    @property
    def config_path(self) -> str:
        """Where the TrainerConfig JSON is mounted in each worker."""
        return f"{CONFIG_DIR}/{CONFIG_FILE_NAME}"

    @property
    def checkpoints(self) -> bool:
        """Whether the workers save checkpoints (to spec.checkpoint or the operator's default
        store): they then need the namespace's checkpoint key."""
        return self.trainer_config.checkpoint.uri is not None

    @property
    def pod_names(self) -> list[str]:
        """Worker pod names of this attempt, by node rank."""
        return [names.worker_pod(self.name, self.attempt, i) for i in range(self.nodes)]


def pvc_to_file(uri: str, claims: list[str]) -> str:
    """pvc://claim/path -> file:///mnt/kubetune/pvc/claim/path, remembering the claim."""
    if not uri.startswith("pvc://"):
        return uri
    claim, _, path = uri.removeprefix("pvc://").partition("/")
    if claim not in claims:
        claims.append(claim)
    return f"file://{PVC_MOUNT_ROOT}/{claim}/{path}".rstrip("/")


def upstream_job(source: str) -> str | None:
    """The job name in an ftj://<name> model source, else None."""
    return source.removeprefix("ftj://").strip("/") if source.startswith("ftj://") else None


def output_location(spec: FineTuneJobSpec) -> str:
    """Where the final model goes: spec.output.uri, or <checkpoint.uri>/output."""
    if spec.output is not None:
        return spec.output.uri
    assert spec.checkpoint is not None  # guaranteed by the CEL rule / validator
    return spec.checkpoint.uri.rstrip("/") + "/output"


@dataclass(frozen=True)
class Store:
    """One object store as the spec describes it: what lives there and how to reach it."""

    name: StoreName
    uris: tuple[str, ...]
    secret: str | None
    endpoint: str | None
    region: str | None

    @property
    def is_s3(self) -> bool:
        """Whether any of its URIs is s3:// (only then are its AWS keys read)."""
        return any(u.startswith("s3://") for u in self.uris)

    @property
    def is_hub(self) -> bool:
        """Whether any of its URIs is hf:// (only then is its secret a hub token)."""
        return any(u.startswith("hf://") for u in self.uris)

    def connection(self) -> StorageConfig:
        """The trainer's view: which store, its endpoint and region (keys come by env)."""
        return StorageConfig(store=self.name, endpoint=self.endpoint, region=self.region)


def stores(
    spec: FineTuneJobSpec, model_source: str, default_checkpoint: Store | None = None
) -> dict[StoreName, Store]:
    """The job's four stores, each with its own secret, endpoint and region.

    Model and data use only their own fields (the benchmark is data). The output, when it does
    not say, uses the checkpoint's (it goes to <checkpoint.uri>/output by default). Without
    spec.checkpoint the checkpoint store is the operator's default one, if any (the output never
    uses that).
    """
    m, d, ck, out = spec.model, spec.dataset, spec.checkpoint, spec.output
    bench = spec.benchmark.uri if spec.benchmark else None
    data_uris = tuple(u for u in (d.train, d.validation, bench) if u)
    ck_secret, ck_endpoint, ck_region = (
        (ck.credentials_secret, ck.endpoint, ck.region) if ck else (None, None, None)
    )
    checkpoint = (
        Store("checkpoint", (ck.uri,), ck_secret, ck_endpoint, ck_region)
        if ck
        else default_checkpoint or Store("checkpoint", (), None, None, None)
    )
    return {
        "model": Store("model", (model_source,), m.credentials_secret, m.endpoint, m.region),
        "dataset": Store("dataset", data_uris, d.credentials_secret, d.endpoint, d.region),
        "checkpoint": checkpoint,
        "output": Store(
            "output",
            (output_location(spec),),
            (out.credentials_secret if out else None) or ck_secret,
            (out.endpoint if out else None) or ck_endpoint,
            (out.region if out else None) or ck_region,
        ),
    }


ENDPOINT_FIELDS: dict[StoreName, str] = {
    "model": "spec.model.endpoint",
    "dataset": "spec.dataset.endpoint",
    "checkpoint": "spec.checkpoint.endpoint",
    "output": "spec.output.endpoint",
}


def remote_endpoints(spec: FineTuneJobSpec) -> list[tuple[str, str, str | None]]:
    """Each store reached over the network (s3://, hf://; ftj:// when it names an endpoint),
    the tracking servers and the hub a push goes to: (its policy list, the field that sets its
    endpoint, the endpoint it uses or None for the default one)."""
    out: list[tuple[str, str, str | None]] = []
    for name, store in stores(spec, spec.model.source).items():
        upstream = upstream_job(spec.model.source) is not None and name == "model"
        if store.is_s3 or store.is_hub or (upstream and store.endpoint):
            out.append((name, ENDPOINT_FIELDS[name], store.endpoint))
    t = spec.tracking
    if t is not None and t.mlflow is not None:
        out.append(("tracking", "spec.tracking.mlflow.trackingUri", t.mlflow.tracking_uri))
    if t is not None and t.wandb is not None:
        out.append(("tracking", "spec.tracking.wandb.baseUrl", t.wandb.base_url))
    if spec.output is not None and spec.output.push is not None:
        out.append(("push", "spec.output.push.endpoint", spec.output.push.endpoint))
    return out


def cluster_problems(spec: FineTuneJobSpec) -> list[str]:
    """What only a cluster refuses: a relative file:// path means something to `kubetune run`
    (its working directory) and nothing in a pod."""
    fields = {
        "spec.model.source": spec.model.source,
        "spec.dataset.train": spec.dataset.train,
        "spec.dataset.validation": spec.dataset.validation,
        "spec.checkpoint.uri": spec.checkpoint.uri if spec.checkpoint else None,
        "spec.checkpoint.resume": spec.checkpoint.resume if spec.checkpoint else None,
        "spec.output.uri": spec.output.uri if spec.output else None,
    }
    return [
        f"{field}: {uri} is a relative path, which means nothing in a pod: use file:///<absolute "
        "path>, pvc:// or s3://"
        for field, uri in fields.items()
        if uri and uri.startswith("file://") and not uri.startswith("file:///")
    ]


def policy_violations(spec: FineTuneJobSpec, settings: OperatorSettings) -> list[str]:
    """How the job breaks the platform policy (empty: it does not)."""
    return violations(spec, settings.policy, remote_endpoints(spec))


def s3_secrets(all_stores: dict[StoreName, Store]) -> tuple[tuple[StoreName, str], ...]:
    """(store, secret) of every s3:// store that names a secret."""
    return tuple((s.name, s.secret) for s in all_stores.values() if s.is_s3 and s.secret)


def hub_token_secret(all_stores: dict[StoreName, Store]) -> str | None:
    """The secret HF_TOKEN comes from: the hf:// model's, else the hf:// data's.

    A worker has one HF_TOKEN, so an hf:// model and hf:// data naming different secrets is
    refused rather than one of them being ignored.
    """
    model, data = all_stores["model"], all_stores["dataset"]
    secrets = [s.secret for s in (model, data) if s.is_hub and s.secret]
    if len(set(secrets)) > 1:
        raise InvalidSpec(
            "spec.dataset.credentialsSecret: hf:// model and data share one hub token; "
            f"name the same secret as spec.model.credentialsSecret ({model.secret})"
        )
    return secrets[0] if secrets else None


def output_format(spec: FineTuneJobSpec) -> Literal["merged", "adapter", "both"]:
    """adapter for lora/qlora, merged otherwise, unless spec.output.format says."""
    if spec.output is not None and spec.output.format is not None:
        return spec.output.format
    return "adapter" if spec.method.type in ("lora", "qlora") else "merged"


def training_config(spec: FineTuneJobSpec) -> TrainingConfig:
    """Hyper-parameters with the batch arithmetic done once, here: the trainer reads the
    accumulation steps it is given (divisibility is a spec rule, api/guards.py)."""
    t = spec.training
    per_step = t.micro_batch_size * spec.world_size
    global_batch = t.global_batch_size or per_step
    es = t.early_stopping
    return TrainingConfig(
        epochs=t.epochs if t.epochs is not None else (None if t.max_steps else 1.0),
        max_steps=t.max_steps,
        learning_rate=t.learning_rate,
        scheduler=t.scheduler,
        warmup_ratio=t.warmup_ratio,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        micro_batch_size=t.micro_batch_size,
        global_batch_size=global_batch,
        gradient_accumulation_steps=global_batch // per_step,
        gradient_checkpointing=t.gradient_checkpointing,
        seed=t.seed,
        eval_every_steps=t.eval_every_steps,
        early_stopping_patience=es.patience if es else None,
        early_stopping_min_delta=es.min_delta if es else 0.0,
        precision=t.precision,
    )


def method_config(spec: FineTuneJobSpec) -> MethodConfig:
    """Method settings flattened for the trainer."""
    m = spec.method
    lora = m.lora or LoraSpec()  # an omitted lora section means its documented defaults
    part = m.partial
    return MethodConfig(
        type=m.type,
        lora_r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        use_dora=lora.use_dora,
        trainable_modules=list(part.trainable_modules) if part and part.trainable_modules else None,
        top_layers=part.top_layers if part else None,
        objective=m.objective,
        preference=preference_config(spec),
    )


def preference_config(spec: FineTuneJobSpec) -> PreferenceConfig:
    """The dpo settings for the trainer; what the spec leaves unset keeps the trainer's default."""
    d = spec.method.dpo
    if d is None:
        return PreferenceConfig()
    given = d.model_dump(include={"beta", "loss", "label_smoothing", "simpo_gamma", "sft_weight"})
    return PreferenceConfig(**{k: v for k, v in given.items() if v is not None})


def deepspeed_config(spec: FineTuneJobSpec) -> DeepSpeedConfig:
    """ZeRO settings for the trainer."""
    d = spec.deepspeed
    return DeepSpeedConfig(
        zero_stage=d.zero_stage,
        offload_optimizer=d.offload.optimizer if d.offload else "none",
        offload_parameters=d.offload.parameters if d.offload else "none",
        nvme_path=d.offload.nvme_path if d.offload else None,
        overrides=dict(d.config or {}),
    )


def perf_config(spec: FineTuneJobSpec) -> PerfConfig:
    """The throughput levers as the user set them; the trainer resolves auto on its hardware.
    Each spec.training.performance field is the PerfConfig field of the same name."""
    return PerfConfig(**spec.training.performance.model_dump())


def output_config(spec: FineTuneJobSpec, uri: str, storage: StorageConfig) -> OutputConfig:
    """The export: where, in what format, which weights, and which registries get it."""
    out = spec.output
    push = out.push if out else None
    return OutputConfig(
        uri=uri,
        format=output_format(spec),
        storage=storage,
        select=out.select if out else "last",
        registry=RegisterConfig(name=out.register_model.name)
        if out and out.register_model
        else None,
        push=PushConfig(
            repo=push.repo, endpoint=push.endpoint, private=push.private, revision=push.revision
        )
        if push
        else None,
    )


def tracking_config(
    spec: FineTuneJobSpec,
    name: str,
    namespace: str,
    claims: list[str],
    checkpoint_store: StorageConfig,
) -> TrackingConfig:
    """Tracking with its defaults filled in: experiment = namespace, run name = job name, and
    TensorBoard event files in <checkpoint.uri>/tensorboard through the checkpoint store."""
    t, ck = spec.tracking, spec.checkpoint
    if t is None:
        return TrackingConfig()
    ml, wb = t.mlflow, t.wandb
    tensorboard = t.tensorboard and ck is not None
    return TrackingConfig(
        mlflow=MlflowConfig(
            tracking_uri=ml.tracking_uri,
            experiment=ml.experiment or namespace,
            run_name=ml.run_name or name,
        )
        if ml
        else None,
        tensorboard_uri=pvc_to_file(ck.uri.rstrip("/") + "/tensorboard", claims)
        if tensorboard and ck
        else None,
        tensorboard_storage=checkpoint_store if tensorboard else StorageConfig(),
        wandb=WandbConfig(
            project=wb.project, entity=wb.entity, run_name=wb.run_name or name, base_url=wb.base_url
        )
        if wb
        else None,
    )


def default_checkpoint_store(job: FineTuneJob, settings: OperatorSettings) -> Store | None:
    """The operator's default checkpoint store as this job's own folder, for a job without
    spec.checkpoint (None when it has one or the operator has no default)."""
    default = settings.default_checkpoint
    if job.spec.checkpoint is not None or default is None:
        return None
    meta = job.metadata
    uri = default.for_job(meta.namespace or "default", meta.name, meta.uid)
    return Store("checkpoint", (uri,), default.credentials_secret, default.endpoint, default.region)


def checkpoint_config(
    spec: FineTuneJobSpec, default: Store | None, store: Store, claims: list[str]
) -> CheckpointConfig:
    """Checkpoints as spec.checkpoint says; in the operator's default store only the one a
    suspend or a preemption saves (no periodic and no final checkpoint), resumed from."""
    ckpt, local_dir = spec.checkpoint, f"{SCRATCH_DIR}/kubetune/checkpoints"
    if ckpt is not None:
        return CheckpointConfig(
            uri=pvc_to_file(ckpt.uri, claims),
            storage=store.connection(),
            every_steps=ckpt.every_steps,
            every_minutes=ckpt.every_minutes,
            keep_last=ckpt.keep_last,
            resume=pvc_to_file(ckpt.resume, claims),
            local_dir=local_dir,
        )
    if default is not None:
        return CheckpointConfig(
            uri=pvc_to_file(default.uris[0], claims),
            storage=store.connection(),
            keep_last=1,
            resume="auto",
            save_final=False,
            local_dir=local_dir,
        )
    return CheckpointConfig(
        uri=None, storage=store.connection(), resume="never", local_dir=local_dir
    )


def resolve(
    job: FineTuneJob,
    attempt: int,
    settings: OperatorSettings,
    upstream_output: str | None = None,
    placement: Placement | None = None,
) -> Plan:
    """The Plan of `attempt` (from 1). `upstream_output` resolves an ftj:// model source;
    `placement` is what Kueue's admission adds to where the workers run."""
    spec, meta = job.spec, job.metadata
    namespace = meta.namespace or "default"
    claims: list[str] = []
    source = spec.model.source
    if upstream_job(source) is not None:
        if not upstream_output:
            raise InvalidSpec(f"spec.model.source: {source} has no output yet")
        source = upstream_output
    out_uri = output_location(spec)
    default_ckpt = default_checkpoint_store(job, settings)
    all_stores = stores(spec, source, default_ckpt)
    config = TrainerConfig(
        job=JobRef(name=meta.name, namespace=namespace, uid=meta.uid, attempt=attempt),
        model=ModelConfig(
            source=pvc_to_file(source, claims),
            revision=spec.model.revision,
            dtype=spec.model.dtype,
            trust_remote_code=spec.model.trust_remote_code,
            storage=all_stores["model"].connection(),
        ),
        data=DataConfig(
            train=pvc_to_file(spec.dataset.train, claims),
            validation=pvc_to_file(spec.dataset.validation, claims)
            if spec.dataset.validation
            else None,
            validation_split=spec.dataset.validation_split,
            format=spec.dataset.format,
            max_seq_length=spec.dataset.max_seq_length,
            packing=spec.dataset.packing,
            storage=all_stores["dataset"].connection(),
        ),
        method=method_config(spec),
        training=training_config(spec),
        deepspeed=deepspeed_config(spec),
        perf=perf_config(spec),
        checkpoint=checkpoint_config(spec, default_ckpt, all_stores["checkpoint"], claims),
        output=output_config(spec, pvc_to_file(out_uri, claims), all_stores["output"].connection()),
        reporting=ReportingConfig(
            progress_sink="kubernetes",
            progress_interval_seconds=settings.progress_interval_seconds,
            metrics_port=c.TRAINER_METRICS_PORT,
        ),
        tracking=tracking_config(
            spec, meta.name, namespace, claims, all_stores["checkpoint"].connection()
        ),
        benchmark=BenchmarkConfig(
            uri=pvc_to_file(spec.benchmark.uri, claims), exact_match=spec.benchmark.exact_match
        )
        if spec.benchmark
        else None,
        spec=redacted_spec(spec.model_dump(by_alias=True, exclude_unset=True, mode="json")),
    )
    return Plan(
        name=meta.name,
        namespace=namespace,
        uid=meta.uid,
        attempt=attempt,
        spec=spec,
        image=spec.resources.image or settings.trainer_image,
        nodes=spec.resources.nodes,
        processes_per_node=spec.processes_per_node,
        world_size=spec.world_size,
        master_port=c.MASTER_PORT,
        grace_seconds=settings.termination_grace_seconds,
        image_pull_policy=spec.resources.image_pull_policy or settings.image_pull_policy,
        trainer_config=config,
        pvc_claims=tuple(claims),
        s3_secrets=s3_secrets(all_stores),
        hub_token_secret=hub_token_secret(all_stores),
        network_policy=settings.network_policy,
        metrics_namespace=settings.metrics_namespace,
        mlflow_secret=spec.tracking.mlflow.credentials_secret
        if spec.tracking and spec.tracking.mlflow
        else None,
        wandb_secret=spec.tracking.wandb.credentials_secret
        if spec.tracking and spec.tracking.wandb
        else None,
        push_secret=spec.output.push.credentials_secret
        if spec.output and spec.output.push
        else None,
        scheduler_name=scheduler_name(spec, settings),
        node_selector={**(spec.resources.node_selector or {}), **placement.node_labels}
        if placement
        else dict(spec.resources.node_selector or {}),
        tolerations=merged_tolerations(spec, placement),
    )


def scheduler_name(spec: FineTuneJobSpec, settings: OperatorSettings) -> str | None:
    """resources.schedulerName; with a gang and none set, the gang scheduler's name."""
    r = spec.resources
    if r.scheduler_name:
        return r.scheduler_name
    return settings.gang_scheduler(r.gang.scheduler) if r.gang else None


def merged_tolerations(
    spec: FineTuneJobSpec, placement: Placement | None
) -> tuple[dict[str, Any], ...]:
    """resources.tolerations, then those of the admitted flavors that are not among them."""
    out = list(spec.resources.tolerations or [])
    for tol in placement.tolerations if placement else ():
        if tol not in out:
            out.append(tol)
    return tuple(out)
