"""Helpers for the end-to-end scenarios: one world (control plane, operator, node agent, S3)
shared by a test module, FineTuneJobs applied with kubectl, and measurements of each fault.

Nothing here fakes a component: the operator is `kopf run`, the pods are real trainer process
trees run by the node agent, the bucket is moto's S3 HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from kubetune_operator.api import constants as c
from kubetune_operator.reconcile import names
from tests.e2e.nodeagent import NodeAgent
from tests.harness import ControlPlane, eventually
from tests.harness.procs import free_port

NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "kubetune-e2e",
    "AWS_SECRET_ACCESS_KEY": "kubetune-e2e-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}
S3_SECRET = "object-store"
# What the trainer image defines; the node agent puts it in every container's environment.
REPO = Path(__file__).resolve().parents[2]
IMAGE_ENV = {
    # The image holds the checkout under test, whichever checkout the environment's editable
    # install points at.
    "PYTHONPATH": f"{REPO / 'operator'}:{REPO / 'trainer'}",
    "DS_ACCELERATOR": "cpu",
    "OMP_NUM_THREADS": "1",
    # Its own op cache: torch keys rebuilds on ninja's command hashes, which differ between
    # ninja versions, so a cache shared with runs that use another ninja is rebuilt every time.
    "TORCH_EXTENSIONS_DIR": str(Path.home() / ".cache" / "kubetune" / "torch_extensions-e2e"),
    "TOKENIZERS_PARALLELISM": "false",
}


class S3:
    """moto's S3 server in a thread on a fixed 127.0.0.1 port, stoppable and restartable
    (objects live in moto's in-process backend, so they survive a restart)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.server: Any = None

    def start(self) -> S3:
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        eventually(self._answers, 15, "S3 server answering")
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def _answers(self) -> bool:
        try:
            self.client().list_buckets()
            return True
        except Exception:
            return False

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )

    def keys(self, bucket: str, prefix: str = "") -> dict[str, int]:
        """Key -> size of every object under prefix."""
        out: dict[str, int] = {}
        pages = (
            self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        )
        for page in pages:
            for obj in page.get("Contents", []):
                out[obj["Key"]] = int(obj["Size"])
        return out

    def committed_steps(self, bucket: str, prefix: str = "checkpoints/") -> list[int]:
        """Steps of checkpoints whose manifest (the commit) exists."""
        found = re.compile(re.escape(prefix) + r"step-(\d{8})/manifest\.json$")
        return sorted(int(m.group(1)) for k in self.keys(bucket, prefix) if (m := found.match(k)))

    def read_json(self, bucket: str, key: str) -> Any:
        return json.loads(self.client().get_object(Bucket=bucket, Key=key)["Body"].read())


def build_deepspeed_ops() -> float:
    """Build (or find up to date) DeepSpeed's CPU comm op in the pods' op cache, with the
    project environment's ninja first on PATH as in the pods; returns the seconds it took."""
    started = time.monotonic()
    env = {**os.environ, **IMAGE_ENV, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    code = "from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder as B; B().load()"
    subprocess.run(
        [sys.executable, "-c", code], env=env, check=True, capture_output=True, timeout=600
    )
    return time.monotonic() - started


def build_tiny_model(folder: Path) -> tuple[Path, Path]:
    """A pre-trained tiny Llama + tokenizer and a task-B dataset (what the quickstart uses)."""
    model, data = folder / "base", folder / "train.jsonl"
    subprocess.run(
        [sys.executable, "-m", "kubetune_trainer.tiny", "--out", str(model), "--write-data", str(data),
         "--data", str(data), "--records", "256", "--pretrain-steps", "40"],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return model, data


def job_manifest(
    name: str,
    bucket: str,
    s3: S3,
    max_steps: int,
    every_steps: int,
    backoff_limit: int = 2,
    keep_last: int = 10,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A 2-worker LoRA job (ZeRO-2, fp32, CPU): model, data, checkpoints and output in one
    bucket."""
    return {
        "apiVersion": c.API_VERSION,
        "kind": c.KIND,
        "metadata": {"name": name},
        "spec": {
            "model": {
                "source": f"s3://{bucket}/base",
                "dtype": "float32",
                "endpoint": s3.endpoint,
                "credentialsSecret": S3_SECRET,
            },
            "dataset": {
                "train": f"s3://{bucket}/data/train.jsonl",
                "endpoint": s3.endpoint,
                "credentialsSecret": S3_SECRET,
                "validationSplit": 0.1,
                "format": "prompt-completion",
                "maxSeqLength": 64,
            },
            "method": {
                "type": "lora",
                "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "targetModules": ["all-linear"]},
            },
            "training": {
                "maxSteps": max_steps,
                "learningRate": 0.003,
                "warmupRatio": 0.1,
                "microBatchSize": 4,
                "globalBatchSize": 8,
                "precision": "fp32",
            },
            "deepspeed": {"zeroStage": 2},
            "resources": {
                "nodes": 2,
                "gpusPerNode": 0,
                "env": [
                    {
                        "name": "KUBETUNE_METRICS_ADDR",
                        "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}},
                    },
                    *({"name": k, "value": v} for k, v in (env or {}).items()),
                ],
            },
            "checkpoint": {
                "uri": f"s3://{bucket}/checkpoints",
                "endpoint": s3.endpoint,
                "region": CREDENTIALS["AWS_DEFAULT_REGION"],
                "credentialsSecret": S3_SECRET,
                "everySteps": every_steps,
                "keepLast": keep_last,
            },
            "output": {"uri": f"s3://{bucket}/model", "format": "adapter"},
            "runPolicy": {"backoffLimit": backoff_limit},
        },
    }


@dataclass
class World:
    """What every scenario of a module shares."""

    cp: ControlPlane
    api: client.ApiClient
    namespace: str
    s3: S3
    agent: NodeAgent
    operator: Any
    model: Path
    data: Path
    workdir: Path
    results: list[dict[str, Any]] = field(default_factory=list)

    # -- jobs --------------------------------------------------------------------------------
    def new_bucket(self, name: str) -> str:
        """A bucket holding the training data."""
        self.s3.client().create_bucket(Bucket=name)
        self.s3.client().upload_file(str(self.data), name, "data/train.jsonl")
        for f in sorted(self.model.rglob("*")):
            if f.is_file():
                self.s3.client().upload_file(str(f), name, f"base/{f.relative_to(self.model)}")
        return name

    def apply(self, manifest: dict[str, Any]) -> str:
        """kubectl apply the manifest; returns the job name."""
        path = self.workdir / f"{manifest['metadata']['name']}.yaml"
        path.write_text(yaml.safe_dump(manifest, sort_keys=False))
        self.cp.kubectl("apply", "-n", self.namespace, "-f", str(path))
        return str(manifest["metadata"]["name"])

    def job(self, name: str) -> dict[str, Any]:
        api = client.CustomObjectsApi(self.api)
        body: Any = api.get_namespaced_custom_object(
            c.GROUP, c.VERSION, self.namespace, c.PLURAL, name
        )
        return dict(body)

    def status(self, name: str) -> dict[str, Any]:
        return dict(self.job(name).get("status") or {})

    def wait_phase(self, name: str, phases: tuple[str, ...], timeout: float) -> dict[str, Any]:
        """The status once its phase is one of `phases`; fails early on an unexpected Failed."""

        def check() -> dict[str, Any] | None:
            st = self.status(name)
            if st.get("phase") in phases:
                return st
            if st.get("phase") == "Failed":
                raise AssertionError(f"job {name} failed: {st.get('message')}\n{self.debug(name)}")
            return None

        try:
            return dict(eventually(check, timeout, f"job {name} reaching {phases}"))
        except AssertionError as err:
            raise AssertionError(f"{err}\n{self.debug(name)}") from None

    def patch_spec(self, name: str, patch: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        """kubectl patch --type merge of the spec (returns the result, never raises)."""
        return self.cp.kubectl(
            "patch", c.SINGULAR + "." + c.GROUP, name, "-n", self.namespace, "--type", "merge",
            "-p", json.dumps({"spec": patch}), check=False,
        )  # fmt: skip

    def delete(self, name: str) -> None:
        """Delete the job and wait until its pods are gone (frees the CPUs for the next one)."""
        self.cp.kubectl(
            "delete",
            f"{c.SINGULAR}.{c.GROUP}",
            name,
            "-n",
            self.namespace,
            "--wait=false",
            check=False,
        )
        eventually(lambda: not self.pods(name), 60, f"pods of {name} gone")

    # -- pods and metrics --------------------------------------------------------------------
    def pods(self, job: str) -> list[dict[str, Any]]:
        items = (
            client.CoreV1Api(self.api)
            .list_namespaced_pod(self.namespace, label_selector=f"{c.LABEL_JOB}={job}")
            .items
        )
        return sorted(
            (self.api.sanitize_for_serialization(p) for p in items),
            key=lambda p: p["metadata"]["name"],
        )

    def worker(self, job: str, attempt: int, index: int = 0) -> str:
        return names.worker_pod(job, attempt, index)

    def trainer_metrics(self, job: str, attempt: int, index: int = 0) -> str | None:
        """The /metrics text of a worker's rank, scraped at its pod address (None if down)."""
        try:
            ip = self.agent.pod_ip(self.namespace, self.worker(job, attempt, index))
            with NO_PROXY.open(f"http://{ip}:{c.TRAINER_METRICS_PORT}/metrics", timeout=2) as r:
                return str(r.read().decode())
        except (KeyError, OSError):
            return None

    def trainer_step(self, job: str, attempt: int) -> int | None:
        """Optimizer steps done by worker 0 of an attempt, from its metrics (None if down)."""
        text = self.trainer_metrics(job, attempt)
        found = re.search(r"^kubetune_trainer_step\{[^}]*\} (\S+)$", text or "", re.M)
        return int(float(found.group(1))) if found else None

    def wait_step(self, job: str, attempt: int, at_least: int, timeout: float) -> int:
        """Wait until worker 0 of `attempt` has done `at_least` steps; returns the step seen."""

        def check() -> int | None:
            step = self.trainer_step(job, attempt)
            if step is not None and step >= at_least:
                return step
            st = self.status(job)
            if st.get("phase") in ("Failed", "Succeeded"):
                raise AssertionError(f"job {job} ended ({st.get('phase')}) before step {at_least}")
            return None

        try:
            return int(
                eventually(check, timeout, f"{job} attempt {attempt} at step {at_least}", poll=0.1)
            )
        except AssertionError as err:
            raise AssertionError(f"{err}\n{self.debug(job)}") from None

    def kill_worker(self, job: str, attempt: int, index: int) -> None:
        import signal

        self.agent.kill_pod(self.namespace, self.worker(job, attempt, index), signal.SIGKILL)

    def run_card(self, bucket: str) -> dict[str, Any]:
        return dict(self.s3.read_json(bucket, "model/kubetune_run.json"))

    def debug(self, job: str) -> str:
        """Status, pods and the last lines of each worker's log, for failure messages."""
        lines = [f"status: {json.dumps(self.status(job), indent=1)[:3000]}"]
        for pod in self.pods(job):
            lines.append(f"pod {pod['metadata']['name']}: {pod.get('status', {}).get('phase')}")
        for log in sorted(self.agent.log_dir.glob(f"{self.namespace}_{job}-*.log")):
            tail = log.read_text(errors="replace").splitlines()[-25:]
            lines += [f"--- {log.name}", *tail]
        return "\n".join(lines)

    # -- results -----------------------------------------------------------------------------
    def record(
        self,
        scenario: str,
        result: str,
        recover_s: float | None,
        steps_lost: int | None,
        note: str = "",
    ) -> None:
        self.results.append(
            {
                "scenario": scenario,
                "result": result,
                "recover_s": recover_s,
                "steps_lost": steps_lost,
                "note": note,
            }
        )


def results_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of the scenarios' outcomes."""
    out = [
        "| scenario | result | time to recover (s) | steps lost | note |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        recover = "-" if r["recover_s"] is None else f"{r['recover_s']:.1f}"
        lost = "-" if r["steps_lost"] is None else str(r["steps_lost"])
        out.append(f"| {r['scenario']} | {r['result']} | {recover} | {lost} | {r['note']} |")
    return "\n".join(out)
