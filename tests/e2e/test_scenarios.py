"""The whole system on one machine, with faults: real apiserver, controller manager, scheduler,
the operator (`kopf run`), trainer pods run as process trees by the node agent, moto's S3 server.

One world per module; each test applies its own FineTuneJob with kubectl and deletes it after.
Each scenario records its result, time to recover and steps lost; the table is printed at the
end of the module and written to <pytest basetemp>/e2e-scenarios.md.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.e2e.nodeagent import NodeAgent
from tests.e2e.nodeagent.agent import leftover_mounts
from tests.e2e.scenario import (
    CREDENTIALS,
    IMAGE_ENV,
    NO_PROXY,
    S3,
    S3_SECRET,
    World,
    build_tiny_model,
    eventually,
    job_manifest,
    results_table,
)
from tests.harness import ControlPlane
from tests.k8s.operator.conftest import Operator

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def world(
    control_plane: ControlPlane,
    crd_installed: str,
    k8s_api: client.ApiClient,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[World]:
    """Namespace with the S3 credentials Secret, S3 server, node agent, operator, tiny model."""
    pytest.importorskip("deepspeed")
    work = tmp_path_factory.mktemp("scenarios")
    namespace = f"e2e-{uuid.uuid4().hex[:6]}"
    control_plane.kubectl("create", "namespace", namespace)
    control_plane.kubectl(
        "create", "secret", "generic", S3_SECRET, "-n", namespace,
        *(f"--from-literal={k}={v}" for k, v in CREDENTIALS.items()),
    )  # fmt: skip
    model, data = build_tiny_model(work / "tiny")
    s3 = S3().start()
    # Not under /tmp: every worker mounts an emptyDir over /tmp, which would hide the volumes.
    node_dir = Path(tempfile.mkdtemp(prefix="kubetune-e2e-node-", dir="/var/tmp"))
    agent = NodeAgent(
        control_plane.kubeconfig, node_dir, name="e2e-scenarios", extra_env=IMAGE_ENV
    ).start()
    operator = Operator(control_plane, namespace, work / "operator.log")
    operator.start()
    w = World(control_plane, k8s_api, namespace, s3, agent, operator, model, data, work)
    try:
        yield w
    finally:
        operator.stop()
        agent.stop()
        left = agent.live_process_groups() or leftover_mounts(str(agent.state_dir))
        s3.stop()
        shutil.copytree(agent.log_dir, work / "pod-logs", dirs_exist_ok=True)
        shutil.rmtree(node_dir, ignore_errors=True)
        control_plane.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        _publish(request.config, w.results, tmp_path_factory.getbasetemp() / "e2e-scenarios.md")
        assert not left, f"node agent left processes or mounts behind: {left}"


def _publish(config: pytest.Config, rows: list[dict[str, Any]], path: Path) -> None:
    """Write the results table to a file and to the terminal (past output capture)."""
    table = results_table(rows)
    path.write_text(table + "\n")
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        return
    with capture.global_and_fixture_disabled():
        reporter.ensure_newline()
        reporter.write_line(f"e2e scenarios ({path}):")
        for line in table.splitlines():
            reporter.write_line(line)


@pytest.fixture(autouse=True)
def _failed_row(world: World, request: pytest.FixtureRequest) -> Iterator[None]:
    """A scenario that did not record its row failed: say so in the table."""
    before = len(world.results)
    yield
    if len(world.results) == before:
        world.record(request.node.name.removeprefix("test_"), "FAILED", None, None)


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:5]}"


def test_happy_path(world: World) -> None:
    """kubectl apply -> Running with progress -> Succeeded; checkpoints, model, metrics."""
    name = _unique("happy")
    bucket = world.new_bucket(name)
    started = time.monotonic()
    world.apply(job_manifest(name, bucket, world.s3, max_steps=30, every_steps=10))

    st = world.wait_phase(name, ("Running",), 120)
    step = world.wait_step(name, 1, 2, 180)
    progress = eventually(
        lambda: (world.status(name).get("progress") or {}).get("step"), 60, "status.progress"
    )
    assert progress >= 1 and world.status(name)["phase"] in ("Running", "Succeeded")
    assert world.status(name)["progress"]["totalSteps"] == 30
    scraped = world.trainer_metrics(name, 1, 1)
    assert scraped and re.search(
        r'^kubetune_trainer_loss\{job="' + name + r'",rank="1"\} ', scraped, re.M
    )
    with NO_PROXY.open(f"http://127.0.0.1:{world.operator.metrics_port}/metrics", timeout=5) as r:
        op_metrics = r.read().decode()
    assert re.search(r'^kubetune_jobs\{phase="Running"\} [1-9]', op_metrics, re.M), op_metrics[
        :2000
    ]

    st = world.wait_phase(name, ("Succeeded",), 300)
    took = time.monotonic() - started
    assert st["attempt"] == 1 and st["output"]["uri"] == f"s3://{bucket}/model"
    assert world.s3.committed_steps(bucket) == [10, 20, 30]
    model_keys = world.s3.keys(bucket, "model/")
    assert {
        "model/adapter_config.json",
        "model/adapter_model.safetensors",
        "model/kubetune_run.json",
    } <= set(model_keys), model_keys
    card = world.run_card(bucket)
    assert card["training"]["steps"] == 30 and card["distributed"]["world_size"] == 2
    world.record(
        "1 happy path",
        "passed",
        None,
        0,
        f"30 steps in {took:.0f}s from apply (step {step} scraped while running)",
    )
    world.delete(name)
