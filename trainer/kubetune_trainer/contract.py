"""The operator-trainer contract: every name and number both sides must agree on, defined once.

The operator renders pods, env and a TrainerConfig (kubetune_trainer.config) that the trainer
reads; the trainer reports back through exit codes, the termination log and the job's status.
Both packages import these from here, so a renamed variable or a new exit code cannot drift
between them. Plain Python only: the operator image has no torch, and imports this module.
"""

from __future__ import annotations

from typing import Literal

# -- the FineTuneJob API the trainer patches (status.progress, .checkpoints, .trainedTokens, .export)
GROUP = "kubetune.dev"
VERSION = "v1alpha1"
PLURAL = "finetunejobs"

# -- exit codes: trainer rank -> launcher -> container -> operator's failure class -----------------
EXIT_OK = 0
EXIT_PREEMPTED = 143 - 100
"""43: SIGTERM made the trainer save a checkpoint and stop (143 is killed without saving)."""
EXIT_BAD_INPUT = 44
"""The config, data or model source is wrong: a new attempt would fail the same way."""
EXIT_GPU_OOM = 45
"""The GPU ran out of memory: the same settings run out again, so the job is not retried."""

TERMINATION_LOG = "/dev/termination-log"
"""Where the trainer leaves its last error; the kubelet shows it as the container's message."""
TERMINATION_LOG_ENV = "KUBETUNE_TERMINATION_LOG"
"""Where the message goes instead (the local runner points each worker at its own file)."""

# -- how the operator hands the trainer its work -----------------------------------------------------
CONFIG_FILE_NAME = "trainer.json"
"""The TrainerConfig JSON: a ConfigMap key in a pod, a file on disk in a local run."""
CONFIG_ENV = "KUBETUNE_CONFIG"
"""Path of the TrainerConfig file, set on every worker."""
ATTEMPT_ENV = "KUBETUNE_ATTEMPT"
"""The attempt number, set on every worker (fault hooks match on it)."""
JOB_NAME_ENV = "KUBETUNE_JOB_NAME"
NAMESPACE_ENV = "KUBETUNE_NAMESPACE"
GRACE_ENV = "KUBETUNE_GRACE_SECONDS"
"""Seconds a worker has after SIGTERM (its pod's terminationGracePeriodSeconds): the operator
reads its setting from it and renders it into every worker; the launcher gives it to torchrun."""
CHECKPOINT_KEY_ENV = "KUBETUNE_CHECKPOINT_KEY"
"""The namespace's checkpoint key (checkpoint/seal.py), from the Secret the operator keeps."""
CHECKPOINT_SECRET_KEY = "key"
"""The key of the namespace's checkpoint-key Secret that holds the key."""
EXIT_DIR_ENV = "KUBETUNE_EXIT_DIR"
"""Folder where each rank leaves its exit code for the launcher (torchrun itself exits 1)."""

MASTER_PORT = 29500
"""Rendezvous port of worker 0 (torchrun's MASTER_PORT)."""
TRAINER_METRICS_PORT = 9400
"""Prometheus port of local rank 0 in a worker; rank r serves on this + r."""
MAX_LISTED_CHECKPOINTS = 20
"""Committed checkpoints status.checkpoints.committed lists at most (newest first, the best kept):
the trainer trims its report to it, the status schema bounds the list by it."""

# -- what the trainer reports in the job's status ---------------------------------------------------
MAX_REPORTED_EVALS = 100
"""Evaluations status.progress.evals lists (the latest): bounds the status a long run writes."""
MAX_REPORTED_SOURCES = 32
"""Data files status.dataSources lists (the first): bounds the status of a run over many files."""

# -- credentials: one secret per store, passed as env, never in the config --------------------------
StoreName = Literal["model", "dataset", "checkpoint", "output"]
"""The four object stores a job talks to; each has its own endpoint, region and credentials."""

S3_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
"""Keys an object-store credentialsSecret may hold; the first two are required."""
S3_REQUIRED_KEYS = S3_SECRET_KEYS[:2]
HUB_TOKEN_KEY = "HF_TOKEN"
"""The key of a hub-token secret (an hf:// source's credentialsSecret), and the worker's variable."""
HUB_PUSH_TOKEN_ENV = "KUBETUNE_HF_PUSH_TOKEN"
"""The worker's variable for output.push's token (HF_TOKEN of its credentialsSecret): apart from
HF_TOKEN, which a read-only token of the hf:// model or data may hold."""
MLFLOW_SECRET_KEYS = (
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
)
"""Keys a tracking.mlflow credentialsSecret may hold (a bearer token, or basic auth); each becomes
the worker variable of the same name, which the MLflow client reads."""
WANDB_SECRET_KEY = "WANDB_API_KEY"
"""The key of a tracking.wandb credentialsSecret, and the worker's variable."""


def s3_credential_env(store: StoreName) -> dict[str, str]:
    """Secret key -> worker env variable for one store: KUBETUNE_S3_<STORE>_<KEY without AWS_>.

    The single naming rule: the operator renders these from the store's credentialsSecret, the
    trainer's S3 client of that store reads them. Per-store names are what let model, data,
    checkpoints and output live behind different keys in one process.
    """
    prefix = f"KUBETUNE_S3_{store.upper()}_"
    return {key: prefix + key.removeprefix("AWS_") for key in S3_SECRET_KEYS}
