"""The environment and command of one worker, shared by the pod renderer and the local runner.

Keeping them in one place is what lets the trainer not know whether it runs in a pod or as a
local process: both get exactly these variables and this torchrun command line.
"""

from __future__ import annotations

from typing import Any

from kubetune_operator.reconcile import names
from kubetune_operator.reconcile.plan import Plan
from kubetune_trainer.contract import (
    ATTEMPT_ENV,
    CHECKPOINT_KEY_ENV,
    CHECKPOINT_SECRET_KEY,
    CONFIG_ENV,
    GRACE_ENV,
    HUB_PUSH_TOKEN_ENV,
    HUB_TOKEN_KEY,
    JOB_NAME_ENV,
    MLFLOW_SECRET_KEYS,
    NAMESPACE_ENV,
    S3_REQUIRED_KEYS,
    WANDB_SECRET_KEY,
    s3_credential_env,
)


def torchrun_env(plan: Plan, node_rank: int, master_addr: str, master_port: int) -> dict[str, str]:
    """Rendezvous variables torchrun and DeepSpeed read, the job identity, and the pod's
    termination grace period (the time a SIGTERM leaves the trainer to save a checkpoint)."""
    return {
        "MASTER_ADDR": master_addr,
        "MASTER_PORT": str(master_port),
        "NNODES": str(plan.nodes),
        "NODE_RANK": str(node_rank),
        "NPROC_PER_NODE": str(plan.processes_per_node),
        "WORLD_SIZE": str(plan.world_size),
        CONFIG_ENV: plan.config_path,
        JOB_NAME_ENV: plan.name,
        NAMESPACE_ENV: plan.namespace,
        ATTEMPT_ENV: str(plan.attempt),
        GRACE_ENV: str(plan.grace_seconds),
        "PYTHONUNBUFFERED": "1",
    }


def user_env(plan: Plan) -> list[dict[str, Any]]:
    """spec.resources.env as core/v1 EnvVar dicts (camelCase, empty fields dropped)."""
    out = []
    for var in plan.spec.resources.env or []:
        out.append(var.model_dump(by_alias=True, exclude_none=True, mode="json"))
    return out


def _secret_ref(var: str, secret: str, key: str, optional: bool) -> dict[str, Any]:
    return {
        "name": var,
        "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": optional}},
    }


def secret_env(plan: Plan) -> list[dict[str, Any]]:
    """Credentials as env from secretKeyRef: never copied into ConfigMaps or status.

    Each s3:// store's keys come from that store's own secret, under that store's variables
    (kubetune_trainer.contract.s3_credential_env); the access key pair is required, the session
    token optional. The hub token is HF_TOKEN of the hf:// source's secret, which is read for
    nothing else. With checkpoints (spec.checkpoint or the operator's default store), the
    namespace's checkpoint key (checkpoint.seal).
    """
    env: list[dict[str, Any]] = []
    for store, secret in plan.s3_secrets:
        for key, var in s3_credential_env(store).items():
            env.append(_secret_ref(var, secret, key, optional=key not in S3_REQUIRED_KEYS))
    if plan.hub_token_secret:
        env.append(_secret_ref(HUB_TOKEN_KEY, plan.hub_token_secret, HUB_TOKEN_KEY, False))
    if plan.checkpoints:
        env.append(
            _secret_ref(
                CHECKPOINT_KEY_ENV, names.CHECKPOINT_KEY_SECRET, CHECKPOINT_SECRET_KEY, False
            )
        )
    env.extend(tracking_secret_env(plan))
    return env


def tracking_secret_env(plan: Plan) -> list[dict[str, Any]]:
    """Tracking and registry credentials, each secret read only for its own keys: MLflow's
    (token or basic auth, each optional) under the names its client reads, W&B's API key, and
    the hub push token under a name of its own (HF_TOKEN may hold a read-only token)."""
    env = [
        _secret_ref(k, plan.mlflow_secret, k, True)
        for k in MLFLOW_SECRET_KEYS
        if plan.mlflow_secret
    ]
    if plan.wandb_secret:
        env.append(_secret_ref(WANDB_SECRET_KEY, plan.wandb_secret, WANDB_SECRET_KEY, False))
    if plan.push_secret:
        env.append(_secret_ref(HUB_PUSH_TOKEN_ENV, plan.push_secret, HUB_TOKEN_KEY, False))
    return env


def launcher_args(config_path: str) -> list[str]:
    """`-m kubetune_trainer.launch --config PATH`: torchrun over this node's ranks.

    The launcher reads NNODES, NODE_RANK, NPROC_PER_NODE, MASTER_ADDR and MASTER_PORT from the
    env above and keeps the trainer's exit codes (43 checkpointed after SIGTERM, 44 bad input),
    which bare torchrun would turn into 1.
    """
    return ["-m", "kubetune_trainer.launch", "--config", config_path]


def pod_command(plan: Plan) -> list[str]:
    """The container command (the image's python runs the launcher)."""
    return ["python", *launcher_args(plan.config_path)]
