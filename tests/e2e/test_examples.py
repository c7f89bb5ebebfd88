"""Every cluster example in examples/ run end to end: kubectl apply of the manifest (patched
only as tests/e2e/examples.py lists) -> the operator installed by helm -> trainer pods from the
built CPU trainer image on the real test node -> Succeeded, with the model where the manifest
says.

One world for the module, on the package's real node (shared with the other e2e modules): the
operator by `helm install` with a default checkpoint store configured (chart value
trainer.defaultCheckpoint), MinIO and a local Hub on the node's address. The world holds what
each example expects to find (a user fills these once): tiny models of the example's
architecture family under the example's model names (in a bucket, on the Hub, on a claim), chat
and prompt-completion data under its data names, the Secrets it names, and hostPath
PersistentVolumes for its claims. The results table is printed at the end of the module and
written to <pytest basetemp>/e2e-examples.md (docs/testing.md explains each row).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from harness import ControlPlane, eventually, network
from harness.gang import Scheduler, start_coscheduling
from harness.images import Image
from harness.node import Node
from kubetune_operator.api import constants as c
from kubetune_operator.apply import CUSTOM_PLURALS
from kubetune_operator.reconcile import gang
from kubetune_operator.reconcile import workload as wl
from tests.e2e.examples import (
    GANG_SCHEDULER,
    SUBSTITUTIONS,
    documents,
    patched,
    platform_documents,
    substituted_fields,
)
from tests.e2e.scenario import CREDENTIALS, S3, S3_SECRET, ChartOperator, World, job_manifest
from tests.fixtures.hub import HubServer, Repo, folder_files
from tests.k8s.queueing.world import apply, delete

# The first test also pays for the world (three tiny models, helm install).
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1800)]

DEFAULT_CHECKPOINTS = "s3://platform-checkpoints/kubetune"
# Secrets the examples name; each holds what its comment tells the user to put there.
S3_SECRETS = ("s3-read", "s3-write", "s3-credentials", "s3-keys", S3_SECRET)
HF_SECRET = "hf-token"
# Where each example looks for its base model: (architecture family, where it lives).
MODELS = {
    "llama": ("s3://models/llama-3.1-8b", "hf://meta-llama/Llama-3.2-3B", "hf://meta-llama/Llama-3.1-8B", "pvc://model-cache/llama-3.1-8b"),
    "qwen2": ("hf://Qwen/Qwen2.5-7B", "s3://models/qwen2.5-0.5b"),
    "mistral": ("hf://mistralai/Mistral-7B-v0.3",),
}  # fmt: skip
CHAT_DATA = (
    "s3://datasets/support-chat/train/part-0.jsonl",
    "s3://datasets/support-chat/benchmark.jsonl",
    "s3://datasets/support-chat/validation/part-0.jsonl",
    "pvc://ft-results/datasets/support-chat/train.jsonl",
    "pvc://ft-results/datasets/support-chat/validation.jsonl",
)
PROMPT_DATA = ("s3://datasets/instructions/train.jsonl",)
HUB_DATASET = "HuggingFaceH4/no_robots"


@dataclass
class ExampleWorld:
    """The scenario world plus the Hub, the claims' folders and the results."""

    w: World
    hub: HubServer
    claims: dict[str, Path]
    rows: list[dict[str, str]] = field(default_factory=list)

    @property
    def here(self) -> dict[str, str]:
        """Run-time values the substitutions name."""
        return {"s3": self.w.s3.endpoint, "hub": self.hub.endpoint}

    def apply_documents(self, name: str, docs: list[dict[str, Any]]) -> None:
        """kubectl apply of every document of the (patched) example."""
        path = self.w.workdir / f"{name}.yaml"
        path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
        self.w.cp.kubectl("apply", "-n", self.w.namespace, "-f", str(path))

    def read(self, uri: str) -> bytes:
        """An object of the S3 server or a file on a claim."""
        if uri.startswith("s3://"):
            bucket, _, key = uri.removeprefix("s3://").partition("/")
            body = self.w.s3.client().get_object(Bucket=bucket, Key=key)["Body"]
            return bytes(body.read())
        claim, _, path = uri.removeprefix("pvc://").partition("/")
        return (self.claims[claim] / path).read_bytes()

    def exists(self, uri: str) -> bool:
        try:
            self.read(uri)
            return True
        except Exception:
            return False


def tiny_model(arch: str, out: Path, data: Path) -> Path:
    """A tiny untrained model of `arch` whose tokenizer knows the data's words."""
    subprocess.run(
        [sys.executable, "-m", "kubetune_trainer.tiny", "--out", str(out), "--arch", arch,
         "--data", str(data), "--pretrain-steps", "0"],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    return out


def write_records(path: Path, form: str, n: int = 256) -> Path:
    """n task records in one of the record forms, as JSON lines."""
    from kubetune_trainer.tiny import synthetic_records, write_jsonl

    return write_jsonl(path, synthetic_records(n, "B", form))


def no_robots_files(chat: Path) -> dict[str, bytes]:
    """The stand-in of HuggingFaceH4/no_robots: its layout (data/{train,test}-*.parquet) and
    columns (prompt, prompt_id, messages, category), filled with the tiny chat task."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [json.loads(line) for line in chat.read_text().splitlines()]
    table = [
        {
            "prompt": r["messages"][1]["content"],
            "prompt_id": f"{i:08x}",
            "messages": r["messages"],
            "category": "Chat",
        }
        for i, r in enumerate(rows)
    ]
    out = {}
    for split, part in (("train", table[:224]), ("test", table[224:])):
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(part), buf)
        out[f"data/{split}-00000-of-00001.parquet"] = buf.getvalue()
    return out


def put(s3: S3, uri: str, source: Path) -> None:
    """Upload a file, or every file of a folder, to an s3:// location (bucket made if new)."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    api = s3.client()
    if bucket not in {b["Name"] for b in api.list_buckets().get("Buckets", [])}:
        api.create_bucket(Bucket=bucket)
    files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    for f in files:
        name = key if source.is_file() else f"{key}/{f.relative_to(source)}"
        api.upload_file(str(f), bucket, name)


def readable_by_all(folder: Path) -> None:
    """A model cache the pods (uid 65532) can read: copytree keeps the private modes of the
    temporary folder the tiny model was written to."""
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


def bind_claims(cp: ControlPlane, namespace: str, root: Path) -> dict[str, Path]:
    """hostPath PersistentVolumes (standing in for NFS/CephFS), each pre-bound to one claim of
    examples/pvc-model-cache.yaml, then that file's claims applied as written."""
    claims = {}
    docs = [d for d in documents("pvc-model-cache") if d["kind"] == "PersistentVolumeClaim"]
    for doc in docs:
        claim = doc["metadata"]["name"]
        folder = root / claim
        folder.mkdir(parents=True)
        folder.chmod(0o777)  # the trainer (uid 65532) writes checkpoints and models there
        pv = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": f"{namespace}-{claim}"},
            "spec": {
                "capacity": doc["spec"]["resources"]["requests"],
                "accessModes": doc["spec"]["accessModes"],
                "persistentVolumeReclaimPolicy": "Retain",
                "hostPath": {"path": str(folder), "type": "Directory"},
                "claimRef": {"namespace": namespace, "name": claim},
            },
        }
        path = root / f"pv-{claim}.yaml"
        path.write_text(yaml.safe_dump_all([pv, doc]))
        cp.kubectl("apply", "-n", namespace, "-f", str(path))
        claims[claim] = folder
    for claim in claims:
        eventually(
            lambda claim=claim: (
                cp.kubectl(
                    "get", "pvc", claim, "-n", namespace, "-o", "jsonpath={.status.phase}"
                ).stdout
                == "Bound"
            ),
            60,
            f"claim {claim} bound",
        )
    return claims


@pytest.fixture(scope="module")
def world(
    control_plane: ControlPlane,
    crd_installed: str,
    k8s_api: client.ApiClient,
    real_node: Node,
    test_images: dict[str, Image],
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[ExampleWorld]:
    work = tmp_path_factory.mktemp("examples")
    namespace = f"examples-{uuid.uuid4().hex[:6]}"
    control_plane.kubectl("create", "namespace", namespace)
    for secret in S3_SECRETS:
        control_plane.kubectl(
            "create", "secret", "generic", secret, "-n", namespace,
            *(f"--from-literal={k}={v}" for k, v in CREDENTIALS.items()),
        )  # fmt: skip
    control_plane.kubectl(
        "create", "secret", "generic", HF_SECRET, "-n", namespace, "--from-literal=HF_TOKEN=hf_e2e"
    )  # fmt: skip
    chat = write_records(work / "chat.jsonl", "chat")
    prompts = write_records(work / "prompts.jsonl", "prompt-completion")
    models = {
        arch: tiny_model(arch, work / f"tiny-{arch}", prompts if arch == "qwen2" else chat)
        for arch in MODELS
    }
    s3 = S3(real_node.bins / "minio", work / "s3", work / "minio.log").start()
    volumes = Path(tempfile.mkdtemp(prefix="kubetune-e2e-volumes-", dir="/var/tmp"))
    claims = bind_claims(control_plane, namespace, volumes)
    hub_repos: dict[tuple[str, str], Repo] = {
        ("dataset", HUB_DATASET): Repo(no_robots_files(chat)),
    }
    for arch, places in MODELS.items():
        for uri in places:
            if uri.startswith("s3://"):
                put(s3, uri, models[arch])
            elif uri.startswith("pvc://"):
                claim, _, path = uri.removeprefix("pvc://").partition("/")
                shutil.copytree(models[arch], claims[claim] / path)
                readable_by_all(claims[claim] / path)
            else:
                hub_repos[("model", uri.removeprefix("hf://"))] = Repo(folder_files(models[arch]))
    for uri in CHAT_DATA + PROMPT_DATA:
        source = prompts if uri in PROMPT_DATA else chat
        if uri.startswith("s3://"):
            put(s3, uri, source)
        else:
            claim, _, path = uri.removeprefix("pvc://").partition("/")
            (claims[claim] / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, claims[claim] / path)
    for bucket in ("checkpoints", "finetuned", "platform-checkpoints"):
        s3.client().create_bucket(Bucket=bucket)
    hub = HubServer(hub_repos, host=network.NODE_IP).__enter__()
    operator = ChartOperator(
        control_plane,
        real_node,
        test_images,
        work,
        settings=(
            f"trainer.defaultCheckpoint.uri={DEFAULT_CHECKPOINTS}",
            f"trainer.defaultCheckpoint.endpoint={s3.endpoint}",
            f"trainer.defaultCheckpoint.credentialsSecret={S3_SECRET}",
        ),
    )
    w = World(
        control_plane, k8s_api, namespace, s3, real_node, operator, models["llama"], prompts, work
    )
    ew = ExampleWorld(w, hub, claims)
    try:
        operator.install()
        yield ew
    finally:
        (work / "operator.log").write_text(operator.log())
        operator.uninstall()
        hub.__exit__(None, None, None)
        s3.stop()
        control_plane.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        for claim in claims:
            control_plane.kubectl(
                "delete", "pv", f"{namespace}-{claim}", "--wait=false", check=False
            )
        shutil.rmtree(volumes, ignore_errors=True)
        _publish(request.config, ew.rows, tmp_path_factory.getbasetemp() / "e2e-examples.md")


def _publish(config: pytest.Config, rows: list[dict[str, str]], path: Path) -> None:
    """The examples table, to a file and to the terminal (past output capture)."""
    lines = ["| example | substituted | result |", "|---|---|---|"]
    lines += [f"| {r['example']} | {r['substituted']} | {r['result']} |" for r in rows]
    path.write_text("\n".join(lines) + "\n")
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        return
    with capture.global_and_fixture_disabled():
        reporter.ensure_newline()
        reporter.write_line(f"e2e examples ({path}):")
        for line in lines:
            reporter.write_line(line)


# What each example must leave behind besides the run card: (file under the output, check).
OUTPUT_FILES = {
    "lora-2x8-s3": ["adapter_config.json", "adapter_model.safetensors"],
    "full-zero3-offload": ["config.json", "model.safetensors", "tokenizer.json"],
    "pvc-model-cache": ["config.json", "model.safetensors", "adapter/adapter_config.json"],
    "qlora-single-gpu": ["adapter_config.json", "adapter_model.safetensors"],
    "kueue-queued": ["adapter_config.json", "adapter_model.safetensors"],
    "gang-coscheduling": ["config.json", "model.safetensors", "tokenizer.json"],
}


@pytest.fixture
def platform(
    world: ExampleWorld, example: str, request: pytest.FixtureRequest
) -> Iterator[list[dict[str, Any]]]:
    """The Kueue platform objects the example queues through, applied as its comment says
    (with Kueue's manager running), and deleted after; [] for the other examples."""
    docs = platform_documents(example, {"kubernetes.io/hostname": world.w.node.name})
    if not docs:
        yield []
        return
    request.getfixturevalue("kueue")
    apply(world.w.cp, docs, world.w.namespace, world.w.workdir)
    try:
        yield docs
    finally:
        delete(world.w.cp, docs, world.w.namespace, world.w.workdir)


@pytest.fixture(scope="module")
def coscheduling(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Scheduler]:
    """The scheduler-plugins scheduler (Coscheduling) beside the default one."""
    scheduler = start_coscheduling(control_plane, tmp_path_factory.mktemp("coscheduling"))
    try:
        yield scheduler
    finally:
        scheduler.stop()


@pytest.fixture
def gang_scheduler(example: str, request: pytest.FixtureRequest) -> Scheduler | None:
    """The gang scheduler the example's workers go to, running; None for the others."""
    if example not in GANG_SCHEDULER:
        return None
    return request.getfixturevalue(GANG_SCHEDULER[example])


@pytest.mark.parametrize("example", sorted(SUBSTITUTIONS))
def test_example_runs_end_to_end(
    world: ExampleWorld,
    example: str,
    platform: list[dict[str, Any]],
    gang_scheduler: Scheduler | None,
) -> None:
    docs = patched(example, world.here)
    job = next(d for d in docs if d["kind"] == c.KIND)
    name, spec = job["metadata"]["name"], job["spec"]
    row = {"example": example, "substituted": substituted_fields(example), "result": "FAILED"}
    world.rows.append(row)
    started = time.monotonic()
    world.apply_documents(name, docs)
    pods = eventually(lambda: world.w.pods(name), 300, f"{name} pods")
    if gang_scheduler is not None:
        workers = spec["resources"]["nodes"]
        assert {p["spec"]["schedulerName"] for p in pods} == {gang_scheduler.name}, pods
        assert pod_group_size(world, name, spec["resources"]["gang"]["scheduler"]) == workers
    st = world.w.wait_phase(name, ("Succeeded",), 900)
    took = time.monotonic() - started
    admitted = admitted_by(world, name) if platform else None

    output = spec["output"]["uri"].rstrip("/")
    card = json.loads(world.read(f"{output}/kubetune_run.json"))
    assert card["training"]["steps"] == spec["training"]["maxSteps"], card["training"]
    assert card["model"]["source"].endswith(spec["model"]["source"].split("/", 3)[-1]), card
    missing = [f for f in OUTPUT_FILES[example] if not world.exists(f"{output}/{f}")]
    assert not missing, f"{example}: {missing} not under {output}"
    assert st["attempt"] == 1, st
    commits = {s.get("commit") for s in card["data"]["sources"]} | {card["model"].get("commit")}
    hub_sourced = [u for u in (spec["model"]["source"], spec["dataset"]["train"]) if "hf://" in u]
    assert len(commits - {None}) >= len(hub_sourced), card  # hub commits recorded
    row["result"] = f"Succeeded in {took:.0f}s, {card['training']['steps']} steps; {output}"
    if gang_scheduler is not None:
        row["result"] += f"; gang of {workers} bound by {gang_scheduler.name}"
    if platform:
        queue = next(d for d in platform if d["kind"] == "ClusterQueue")["metadata"]["name"]
        assert admitted == queue, f"{name} was not admitted by Kueue's {queue}: {admitted}"
        row["result"] += f"; admitted by Kueue (ClusterQueue {admitted})"
    world.w.delete(name)


def pod_group_size(world: ExampleWorld, job: str, scheduler: str) -> int | None:
    """minMember of the PodGroup the job's workers are gang-scheduled as (None if none)."""
    group, version = gang.APIS[scheduler]
    api = client.CustomObjectsApi(world.w.api)
    plural = CUSTOM_PLURALS["PodGroup"]
    found: Any = api.list_namespaced_custom_object(group, version, world.w.namespace, plural)
    groups = owned_by(found["items"], job)
    return int(groups[0]["spec"]["minMember"]) if groups else None


def owned_by(items: list[dict[str, Any]], job: str) -> list[dict[str, Any]]:
    """The objects of `items` the job owns."""
    return [
        item
        for item in items
        if job in {o["name"] for o in item["metadata"].get("ownerReferences") or []}
    ]


def admitted_by(world: ExampleWorld, job: str) -> str | None:
    """The ClusterQueue that admitted the job's Kueue Workload (None if none did)."""
    api = client.CustomObjectsApi(world.w.api)
    found: Any = api.list_namespaced_custom_object(
        wl.GROUP, wl.VERSION, world.w.namespace, wl.PLURAL
    )
    for workload in owned_by(found["items"], job):
        admission = (workload.get("status") or {}).get("admission") or {}
        if admission.get("clusterQueue"):
            return str(admission["clusterQueue"])
    return None


def test_suspend_without_checkpoint_resumes_from_the_default_store(world: ExampleWorld) -> None:
    """A job without spec.checkpoint, in an operator with a default checkpoint store: suspend
    saves to <store>/<namespace>/<job>/<uid>, resume continues from that step, and nothing
    else is saved there (no periodic or final checkpoint)."""
    w = world.w
    name = f"nockpt-{uuid.uuid4().hex[:5]}"
    bucket = w.new_bucket(name)
    manifest = job_manifest(name, bucket, w.s3, max_steps=16, every_steps=1000)
    del manifest["spec"]["checkpoint"]
    manifest["spec"]["output"]["credentialsSecret"] = S3_SECRET
    manifest["spec"]["output"]["endpoint"] = w.s3.endpoint
    w.apply(manifest)
    w.wait_step(name, 1, 4, 300)
    uid = w.job(name)["metadata"]["uid"]
    prefix = f"kubetune/{w.namespace}/{name}/{uid}/"
    assert w.patch_spec(name, {"runPolicy": {"suspend": True}}).returncode == 0
    st = w.wait_phase(name, ("Suspended",), 120)
    suspended = next(x for x in st["conditions"] if x["type"] == "Suspended")
    assert suspended["reason"] == "Suspended", suspended  # not SuspendedWithoutCheckpoint
    eventually(lambda: not w.pods(name), 60, "workers gone after suspend")
    saved = w.s3.committed_steps("platform-checkpoints", prefix)
    assert len(saved) == 1 and saved[0] >= 4, saved

    assert w.patch_spec(name, {"runPolicy": {"suspend": False}}).returncode == 0
    w.wait_phase(name, ("Succeeded",), 600)
    card = w.run_card(bucket)
    assert card["checkpoints"]["resumed_from"]["step"] == saved[0] == card["training"]["start_step"]
    assert w.s3.committed_steps("platform-checkpoints", prefix) == saved
    world.rows.append(
        {
            "example": "(no spec.checkpoint, suspended)",
            "substituted": "default checkpoint store: " + DEFAULT_CHECKPOINTS,
            "result": f"suspended at checkpoint {saved[0]}, resumed from it, Succeeded",
        }
    )
    w.delete(name)


def settled(world: ExampleWorld, plural: str, name: str, done: Any) -> dict[str, Any]:
    """The object's status once done(status) says so; fails at once on phase Failed."""

    def check() -> dict[str, Any] | None:
        st = world.w.kubetune_object(plural, name).get("status") or {}
        if st.get("phase") == "Failed":
            raise AssertionError(f"{plural}/{name} failed: {json.dumps(st, indent=1)}")
        return st if done(st) else None

    return dict(eventually(check, 1500, f"{plural}/{name} done", poll=2))


@pytest.mark.long
def test_sweep_example_runs_its_grid_and_marks_the_best_trial(world: ExampleWorld) -> None:
    """examples/sweep-lr-rank.yaml: its 3 x 3 grid, two trials at a time, each an ordinary
    FineTuneJob writing to its own folders; the best Succeeded trial (lowest eval loss) is
    marked, and its model is where status.best says."""
    example = "sweep-lr-rank"
    docs = patched(example, world.here)
    name = next(d for d in docs if d["kind"] == c.SWEEP_KIND)["metadata"]["name"]
    row = {"example": example, "substituted": substituted_fields(example), "result": "FAILED"}
    world.rows.append(row)
    started = time.monotonic()
    world.apply_documents(name, docs)
    st = settled(world, c.SWEEP_PLURAL, name, lambda s: s.get("phase") == "Succeeded")
    took = time.monotonic() - started
    trials = st["trials"]
    assert len(trials) == 9, trials
    assert {t["phase"] for t in trials} <= {"Succeeded", "Terminated"}, trials
    finished = [t for t in trials if t["phase"] == "Succeeded"]
    best = min(finished, key=lambda t: t["objective"])
    assert st["best"]["trial"] == best["name"], (st["best"], best)
    assert st["best"]["outputUri"] == f"s3://finetuned/lr-rank/{best['name']}", st["best"]
    assert world.exists(f"{st['best']['outputUri']}/adapter_model.safetensors")
    stopped = len(trials) - len(finished)
    row["result"] = (
        f"Succeeded in {took:.0f}s: 9 trials, {len(finished)} finished, {stopped} stopped early; "
        f"best {best['name']} {best['parameters']} (eval loss {best['objective']:.3f})"
    )
    world.w.cp.kubectl("delete", "ftsweep", name, "-n", world.w.namespace, "--wait=false")


@pytest.mark.long
def test_schedule_example_trains_on_a_data_drop_and_gates_it(world: ExampleWorld) -> None:
    """examples/schedule-new-data.yaml: a data drop lands under its prefix; a run continues
    the base on that drop, is scored on the benchmark (eval loss and exact match) against the
    model it started from, and is promoted to the URI deployments read."""
    example = "schedule-new-data"
    docs = patched(example, world.here)
    name = next(d for d in docs if d["kind"] == c.SCHEDULE_KIND)["metadata"]["name"]
    row = {"example": example, "substituted": substituted_fields(example), "result": "FAILED"}
    world.rows.append(row)
    world.apply_documents(name, docs)
    started = time.monotonic()
    world.w.s3.client().copy_object(
        Bucket="datasets",
        Key="support-chat/incoming/2026-12-03/part-0.jsonl",
        CopySource={"Bucket": "datasets", "Key": "support-chat/train/part-0.jsonl"},
    )
    st = settled(
        world, c.SCHEDULE_PLURAL, name,
        lambda s: any(r.get("promoted") is not None for r in s.get("runs", [])),
    )  # fmt: skip
    took = time.monotonic() - started
    run = st["runs"][0]
    assert run["dataUri"] == "s3://datasets/support-chat/incoming/2026-12-03/", run
    assert {"evalLoss", "exactMatch"} <= set(run["candidate"]) and run["current"], run
    assert run["promoted"] is True, run
    assert run["candidate"]["evalLoss"] < run["current"]["evalLoss"], run
    promoted = st["promoted"]["uri"]
    assert promoted == f"s3://finetuned/support-bot/{run['name']}", st["promoted"]
    assert world.exists(f"{promoted}/adapter_model.safetensors")
    row["result"] = (
        f"run {run['name']} {took:.0f}s after the drop: benchmark eval loss "
        f"{run['current']['evalLoss']:.3f} -> {run['candidate']['evalLoss']:.3f}, exact match "
        f"{run['current'].get('exactMatch')} -> {run['candidate']['exactMatch']}; promoted"
    )
    world.w.cp.kubectl("delete", "ftsched", name, "-n", world.w.namespace, "--wait=false")
