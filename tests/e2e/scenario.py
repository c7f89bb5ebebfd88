"""Helpers for the end-to-end scenarios: one world (control plane, a real node, the operator
installed by helm from its built image, an S3 server) shared by a test module, FineTuneJobs
applied with kubectl, and measurements of each fault.

Nothing here fakes a component: kubelet runs the pods from the built images with containerd and
runc, the operator is the chart's Deployment, the bucket is MinIO on the node's bridge address.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from harness import ControlPlane, eventually, network
from harness.images import Image
from harness.node import Node
from harness.procs import spawn, stop
from kubetune_operator.api import constants as c
from kubetune_operator.reconcile import names
from tests.k8s.chart.test_install import helm
from tests.unit.chart.helm import CHART

NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "kubetune-e2e",
    "AWS_SECRET_ACCESS_KEY": "kubetune-e2e-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}
S3_SECRET = "object-store"
OPERATOR_NAMESPACE = "kubetune-system"
# One trainer thread per process: two workers share this machine's two cores.
TRAINER_ENV = {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def free_port_on(host: str) -> int:
    """A TCP port nothing listens on at `host` right now."""
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class S3:
    """The S3 server of the scenarios, on the node's bridge address (pods and the tests reach it
    there); stoppable and restartable, its objects kept across a restart.

    MinIO, the S3 server on-premises clusters run, built by hack/build-node.sh; where that
    binary is missing, moto's S3 server in this process (its objects live in memory)."""

    def __init__(self, minio: Path, data_dir: Path, log: Path) -> None:
        self.minio, self.data_dir, self.log = minio, data_dir, log
        self.port = free_port_on(network.NODE_IP)
        self.endpoint = f"http://{network.NODE_IP}:{self.port}"
        self.kind = "MinIO" if minio.exists() else "moto"
        self.proc: subprocess.Popen[bytes] | None = None
        self.moto: Any = None

    def start(self) -> S3:
        if self.kind == "MinIO":
            self._start_minio()
        else:
            from moto.server import ThreadedMotoServer

            self.moto = ThreadedMotoServer(ip_address=network.NODE_IP, port=self.port)
            self.moto.start()
        eventually(self._answers, 60, f"{self.kind} answering", self.log)
        return self

    def _start_minio(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(self.data_dir.parent),
            "MINIO_ROOT_USER": CREDENTIALS["AWS_ACCESS_KEY_ID"],
            "MINIO_ROOT_PASSWORD": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            "MINIO_BROWSER": "off",
            "MINIO_UPDATE": "off",
        }
        self.proc = spawn(
            [str(self.minio), "server", str(self.data_dir), "--quiet",
             "--address", f"{network.NODE_IP}:{self.port}", "--console-address", "127.0.0.1:0"],
            self.log, env,
        )  # fmt: skip

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None
        if self.moto is not None:
            self.moto.stop()
            self.moto = None

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"MinIO exited with {self.proc.returncode}; log {self.log}")
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


class ChartOperator:
    """The operator as users install it: `helm install` of charts/kubetune with the built
    operator image, its trainer image the built CPU trainer; on the real node."""

    def __init__(
        self,
        cp: ControlPlane,
        node: Node,
        images: dict[str, Image],
        workdir: Path,
        settings: tuple[str, ...] = (),
    ) -> None:
        """settings: more --set values (KEY=VALUE), as a platform configures the chart."""
        self.cp, self.node, self.images, self.workdir = cp, node, images, workdir
        self.settings = settings
        self.release = "kubetune"
        self.namespace = OPERATOR_NAMESPACE

    def values(self) -> list[str]:
        """--set values: the built images (never pulled), a shorter SIGTERM grace for tests,
        then the world's own settings."""
        op_repo, op_tag = self.images["operator"].ref.rsplit(":", 1)
        tr_repo, tr_tag = self.images["trainer"].ref.rsplit(":", 1)
        sets = [
            f"image.repository={op_repo}", f"image.tag={op_tag}", "image.pullPolicy=Never",
            f"trainer.image.repository={tr_repo}", f"trainer.image.tag={tr_tag}",
            "trainer.imagePullPolicy=Never", "trainer.terminationGracePeriodSeconds=60",
            *self.settings,
        ]  # fmt: skip
        return [arg for s in sets for arg in ("--set", s)]

    def install(self) -> float:
        """helm install, then wait until the operator pod is Ready; the seconds it took."""
        started = time.monotonic()
        helm(
            self.cp, self.workdir, "install", self.release, str(CHART), "-n", self.namespace,
            "--create-namespace", *self.values(),
        )  # fmt: skip
        self.wait_ready(180)
        return time.monotonic() - started

    def uninstall(self) -> None:
        helm(self.cp, self.workdir, "uninstall", self.release, "-n", self.namespace, check=False)

    def pod(self) -> dict[str, Any]:
        """The operator's (only) pod."""
        out = self.cp.kubectl(
            "get", "pods", "-n", self.namespace, "-l", "app.kubernetes.io/name=kubetune",
            "-o", "json",
        )  # fmt: skip
        items = json.loads(out.stdout)["items"]
        assert len(items) == 1, [p["metadata"]["name"] for p in items]
        return dict(items[0])

    def ready(self) -> bool:
        conds = (self.pod().get("status") or {}).get("conditions") or []
        return any(x["type"] == "Ready" and x["status"] == "True" for x in conds)

    def wait_ready(self, timeout: float) -> None:
        eventually(self.ready, timeout, "operator pod Ready")

    def metrics(self) -> str:
        """The operator's /metrics, scraped at its pod address as Prometheus would."""
        ip = self.pod()["status"]["podIP"]
        with NO_PROXY.open(f"http://{ip}:8080/metrics", timeout=5) as r:
            return str(r.read().decode())

    def kill(self) -> None:
        """SIGKILL the operator's process; kubelet restarts the container."""
        pod = self.pod()
        self.node.kill_container(self.namespace, pod["metadata"]["name"], "operator")

    def restarts(self) -> int:
        statuses = (self.pod().get("status") or {}).get("containerStatuses") or [{}]
        return int(statuses[0].get("restartCount", 0))

    def log(self) -> str:
        return self.cp.kubectl(
            "logs",
            "-n",
            self.namespace,
            "-l",
            "app.kubernetes.io/name=kubetune",
            "--tail=300",
            check=False,
        ).stdout


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
    limits: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A 2-worker LoRA job (ZeRO-2, fp32, CPU): model, data, checkpoints and output in one
    bucket, on the S3 server the pods reach on the node's bridge address."""
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
                    *({"name": k, "value": v} for k, v in {**TRAINER_ENV, **(env or {})}.items()),
                ],
                **({"limits": limits} if limits else {}),
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
    node: Node
    operator: ChartOperator
    model: Path
    data: Path
    workdir: Path
    results: list[dict[str, Any]] = field(default_factory=list)
    waits: dict[str, float] = field(default_factory=dict)

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
        return self.kubetune_object(c.PLURAL, name)

    def kubetune_object(self, plural: str, name: str) -> dict[str, Any]:
        """A FineTuneJob, FineTuneSweep or FineTuneSchedule of the namespace, as stored."""
        api = client.CustomObjectsApi(self.api)
        body: Any = api.get_namespaced_custom_object(
            c.GROUP, c.VERSION, self.namespace, plural, name
        )
        return dict(body)

    def status(self, name: str) -> dict[str, Any]:
        return dict(self.job(name).get("status") or {})

    def wait_phase(
        self, name: str, phases: tuple[str, ...], timeout: float, poll: float = 0.25
    ) -> dict[str, Any]:
        """The status once its phase is one of `phases`; fails early on an unexpected Failed."""

        def check() -> dict[str, Any] | None:
            st = self.status(name)
            if st.get("phase") in phases:
                return st
            if st.get("phase") == "Failed":
                raise AssertionError(f"job {name} failed: {st.get('message')}\n{self.debug(name)}")
            return None

        try:
            return dict(eventually(check, timeout, f"job {name} reaching {phases}", poll=poll))
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
        eventually(lambda: not self.pods(name), 120, f"pods of {name} gone")

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

    def pod_ip(self, pod: str) -> str | None:
        try:
            body = client.CoreV1Api(self.api).read_namespaced_pod(pod, self.namespace)
        except client.ApiException:
            return None
        return body.status.pod_ip if body.status else None

    def trainer_metrics(self, job: str, attempt: int, index: int = 0) -> str | None:
        """The /metrics text of a worker's rank, scraped at its pod address (None if down)."""
        ip = self.pod_ip(self.worker(job, attempt, index))
        if not ip:
            return None
        try:
            with NO_PROXY.open(f"http://{ip}:{c.TRAINER_METRICS_PORT}/metrics", timeout=2) as r:
                return str(r.read().decode())
        except OSError:
            return None

    def trainer_step(self, job: str, attempt: int) -> int | None:
        """Optimizer steps done by worker 0 of an attempt, from its metrics (None if down)."""
        text = self.trainer_metrics(job, attempt)
        found = re.search(r"^kubetune_trainer_step\{[^}]*\} (\S+)$", text or "", re.M)
        return int(float(found.group(1))) if found else None

    def highest_step_within(self, job: str, attempt: int, seconds: float) -> int | None:
        """The highest step worker 0 of `attempt` reports over `seconds` (None if it never
        answered): one scrape can miss a busy worker on a loaded node, a window does not."""
        seen: list[int] = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            step = self.trainer_step(job, attempt)
            seen.extend([step] if step is not None else [])
            time.sleep(1)
        return max(seen, default=None)

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
        """SIGKILL the trainer container's process, as the kernel or a crash would."""
        self.node.kill_container(self.namespace, self.worker(job, attempt, index), "trainer")

    def pod_logs(self, job: str) -> list[Path]:
        """Every trainer log kubelet wrote for the job's pods, attempt by attempt."""
        return sorted(self.node.pod_log_dir.glob(f"{self.namespace}_{job}-*/trainer/*.log"))

    def run_card(self, bucket: str) -> dict[str, Any]:
        return dict(self.s3.read_json(bucket, "model/kubetune_run.json"))

    def debug(self, job: str) -> str:
        """Status, pods and the last lines of each worker's log, for failure messages."""
        lines = [f"status: {json.dumps(self.status(job), indent=1)[:3000]}"]
        for pod in self.pods(job):
            lines.append(f"pod {pod['metadata']['name']}: {pod.get('status', {}).get('phase')}")
        for log in self.pod_logs(job):
            tail = log.read_text(errors="replace").splitlines()[-25:]
            lines += [f"--- {log.parent.parent.name}", *tail]
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


@contextmanager
def opened_world(
    cp: ControlPlane,
    api: client.ApiClient,
    node: Node,
    images: dict[str, Image],
    work: Path,
    prefix: str,
) -> Iterator[World]:
    """A namespace holding the S3 credentials Secret, MinIO on the node's bridge, the operator
    installed by helm (the wait recorded), the tiny model and data; all removed after, the
    operator's log kept in `work`."""
    namespace = f"{prefix}-{uuid.uuid4().hex[:6]}"
    cp.kubectl("create", "namespace", namespace)
    cp.kubectl(
        "create", "secret", "generic", S3_SECRET, "-n", namespace,
        *(f"--from-literal={k}={v}" for k, v in CREDENTIALS.items()),
    )  # fmt: skip
    model, data = build_tiny_model(work / "tiny")
    s3 = S3(node.bins / "minio", work / "s3", work / "minio.log").start()
    operator = ChartOperator(cp, node, images, work)
    w = World(cp, api, namespace, s3, node, operator, model, data, work)
    try:
        w.waits["helm install -> operator Ready"] = operator.install()
        yield w
    finally:
        (work / "operator.log").write_text(operator.log())
        operator.uninstall()
        s3.stop()
        cp.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
