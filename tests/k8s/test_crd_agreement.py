"""Both validators decide alike on many generated manifests, not just the hand-written table:
every leaf of a full manifest is set to values of each JSON type, and the apiserver's verdict
(dry run) must equal the offline models' verdict."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import ValidationError

from kubetune_operator.api.spec import FineTuneJob
from tests.k8s.apiserver import server_dry_run

pytestmark = pytest.mark.k8s

RICH_MANIFEST: dict[str, Any] = {
    "apiVersion": "kubetune.dev/v1alpha1",
    "kind": "FineTuneJob",
    "metadata": {"name": "rich"},
    "spec": {
        "model": {"source": "s3://models/base", "dtype": "bfloat16", "revision": "main"},
        "dataset": {
            "train": "s3://data/train/",
            "validationSplit": 0.1,
            "format": "chat",
            "maxSeqLength": 512,
        },
        "method": {
            "type": "lora",
            "lora": {"r": 8, "alpha": 16, "dropout": 0.1, "targetModules": ["q_proj"]},
        },
        "training": {
            "maxSteps": 100,
            "learningRate": 0.0002,
            "microBatchSize": 2,
            "globalBatchSize": 8,
            "earlyStopping": {"patience": 2, "minDelta": 0.01},
            "evalEverySteps": 10,
        },
        "deepspeed": {"zeroStage": 3, "offload": {"optimizer": "cpu", "parameters": "cpu"}},
        "resources": {
            "nodes": 2,
            "gpusPerNode": 2,
            "sharedMemory": "8Gi",
            "nodeSelector": {"pool": "gpu"},
        },
        "checkpoint": {"uri": "s3://ckpt/rich", "everySteps": 50, "keepLast": 2, "resume": "auto"},
        "output": {"uri": "s3://out/rich", "format": "adapter"},
        "runPolicy": {"backoffLimit": 2, "stallTimeout": "10m", "suspend": False},
        "queue": {"name": "team-a"},
    },
}

# Values of every JSON type (null too: both drop it, then default the field) and around the
# usual bounds.
PROBES: list[Any] = [
    None,
    -1,
    0,
    1,
    3,
    17,
    5000,
    0.5,
    1.5,
    True,
    "",
    "x",
    "3",
    "s3://b/k",
    "2h",
    [],
    ["a"],
    {},
]


def leaves(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Paths of every scalar or list in the manifest."""
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from leaves(value, (*path, key))
    else:
        yield path


def with_value(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """RICH_MANIFEST with one leaf replaced."""
    m = copy.deepcopy(RICH_MANIFEST)
    node = m
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return m


def offline_accepts(manifest: dict[str, Any]) -> bool:
    try:
        FineTuneJob.model_validate(manifest)
    except ValidationError:
        return False
    return True


SPEC_LEAVES = [p for p in leaves(RICH_MANIFEST) if p[0] == "spec"]


def test_rich_manifest_is_valid_for_both(
    k8s_api: Any, crd_installed: str, control_plane: Any
) -> None:

    ns = f"agree-{uuid.uuid4().hex[:6]}"
    control_plane.kubectl("create", "namespace", ns)
    try:
        assert offline_accepts(RICH_MANIFEST)
        assert server_dry_run(k8s_api, ns, RICH_MANIFEST) is None
    finally:
        control_plane.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_validators_agree_on_every_leaf_and_probe(
    k8s_api: Any, crd_installed: str, control_plane: Any
) -> None:
    ns = f"agree-{uuid.uuid4().hex[:6]}"
    control_plane.kubectl("create", "namespace", ns)
    disagreements = []
    checked = 0
    try:
        for path in SPEC_LEAVES:
            for value in PROBES:
                manifest = with_value(path, value)
                offline = offline_accepts(manifest)
                message = server_dry_run(k8s_api, ns, manifest)
                server = message is None
                checked += 1
                if offline != server:
                    disagreements.append(
                        f"{'.'.join(path)}={value!r}: offline={offline} server={server} {message}"
                    )
    finally:
        control_plane.kubectl("delete", "namespace", ns, "--wait=false", check=False)
    assert checked >= 500
    assert not disagreements, f"{len(disagreements)} of {checked} disagree:\n" + "\n".join(
        disagreements
    )
