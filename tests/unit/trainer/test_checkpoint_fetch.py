"""On resume each rank downloads only what DeepSpeed's load_checkpoint reads on that rank: the
shared files and its own shards; every file when the world size changed or the config makes
DeepSpeed read every shard."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from kubetune_trainer.checkpoint import manager
from kubetune_trainer.checkpoint.manifest import (
    Committed,
    files_to_fetch,
    reader_rank,
    reads_every_shard,
)
from kubetune_trainer.storage import FileStorage

pytestmark = pytest.mark.unit

ZERO2 = [
    "mp_rank_00_model_states.pt",
    "zero_pp_rank_0_mp_rank_00_optim_states.pt",
    "zero_pp_rank_1_mp_rank_00_optim_states.pt",
    "zero_to_fp32.py",
]
ZERO3 = [
    "zero_pp_rank_0_mp_rank_00_model_states.pt",
    "zero_pp_rank_0_mp_rank_00_optim_states.pt",
    "zero_pp_rank_1_mp_rank_00_model_states.pt",
    "zero_pp_rank_1_mp_rank_00_optim_states.pt",
    "zero_to_fp32.py",
]


def manifest_of(names: list[str], world_size: int) -> dict[str, Any]:
    return {"world_size": world_size, "files": {n: {"size": 1, "sha256": "x"} for n in names}}


@pytest.mark.parametrize(
    ("names", "rank", "expected"),
    [
        (ZERO2, 0, ["mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_to_fp32.py"]),
        (ZERO2, 1, ["mp_rank_00_model_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt", "zero_to_fp32.py"]),
        (ZERO3, 1, ["zero_pp_rank_1_mp_rank_00_model_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt", "zero_to_fp32.py"]),
    ],
)  # fmt: skip
def test_a_rank_fetches_the_shared_files_and_its_own_shards(
    names: list[str], rank: int, expected: list[str]
) -> None:
    assert files_to_fetch(manifest_of(names, 2), rank, 2) == expected


def test_rank_1_does_not_take_rank_10s_shards_and_the_other_way_round() -> None:
    names = [f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt" for r in range(12)]
    assert files_to_fetch(manifest_of(names, 12), 1, 12) == [names[1]]
    assert files_to_fetch(manifest_of(names, 12), 10, 12) == [names[10]]


@pytest.mark.parametrize(
    ("name", "rank"),
    [
        ("bf16_zero_pp_rank_3_mp_rank_00_optim_states.pt", 3),  # bf16 optimizer (stage 0)
        ("zero_pp_rank_2_mp_rank_00optim_states.pt", 2),  # the old name DeepSpeed still loads
        ("zero_pp_rank_5_mp_rank_01_model_states.pt", 5),  # ZeRO-3 parameters, mp rank 1
        ("offloaded_tensors/rank04/optimizer/0.tensor.swp", 4),  # NVMe-offloaded optimizer
        ("mp_rank_00_model_states.pt", None),  # stages 0-2: every rank loads the module
        ("layer_0_expert_1_mp_rank_00_model_states.pt", None),  # MoE experts: not ours to judge
        ("zero_to_fp32.py", None),
        ("notes/zero_pp_rank_1_mp_rank_00_optim_states.pt", None),  # only at the top level
    ],
)
def test_reader_rank(name: str, rank: int | None) -> None:
    assert reader_rank(name) == rank


def test_another_world_size_fetches_everything() -> None:
    """DeepSpeed refuses (or, with elastic checkpoints, merges) shards of another data-parallel
    size; either way it must see them all, as before."""
    assert files_to_fetch(manifest_of(ZERO3, 4), 1, 2) == sorted(ZERO3)
    assert files_to_fetch(manifest_of(ZERO3, 2), 3, 4) == sorted(ZERO3)
    assert files_to_fetch({"files": manifest_of(ZERO3, 2)["files"]}, 0, 2) == sorted(ZERO3)


def test_a_config_that_reads_every_shard_fetches_everything() -> None:
    assert files_to_fetch(manifest_of(ZERO2, 2), 0, 2, every_shard=True) == sorted(ZERO2)


@pytest.mark.parametrize(
    ("conf", "every"),
    [
        ({"zero_optimization": {"stage": 2}}, False),
        ({"zero_optimization": {"stage": 2, "elastic_checkpoint": True}}, True),
        ({"zero_optimization": {"stage": 3}, "checkpoint": {"load_universal": True}}, True),
        ({"checkpoint": {"use_node_local_storage": True}}, True),
        ({"checkpoint": {"tag_validation": "Warn"}}, False),
    ],
)
def test_reads_every_shard(conf: dict[str, Any], every: bool) -> None:
    assert reads_every_shard(conf) is every


def test_deepspeed_names_shards_the_way_reader_rank_expects() -> None:
    """The file names come from DeepSpeed's own naming functions, so a rename there fails here."""
    engine_mod = pytest.importorskip("deepspeed.runtime.engine")
    engine = engine_mod.DeepSpeedEngine.__new__(engine_mod.DeepSpeedEngine)
    for bf16 in (False, True):
        path = engine._get_rank_zero_ckpt_name("", "step-00000010", 0, 7, bf16)
        assert reader_rank(Path(path).name) == 7, path
    for stage3, expected in ((True, 3), (False, None)):
        engine.checkpoint_mp_rank = 0
        engine.zero_optimization_partition_weights = lambda stage3=stage3: stage3
        path = engine._get_ckpt_name("", "step-00000010", pp_placeholder=3)
        assert reader_rank(Path(path).name) == expected, path


def test_download_fetches_only_the_names_given_and_checks_them(tmp_path: Path) -> None:
    """A corrupt shard of rank 1 is rank 1's to find; rank 0 neither fetches nor reports it."""
    store = FileStorage(str(tmp_path / "store"))
    files: dict[str, dict[str, Any]] = {}
    for name in ZERO3:
        body = name.encode() * 10
        store.put_bytes(body, f"step-00000010/{name}")
        files[name] = {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    store.put_bytes(b"X" * files[ZERO3[3]]["size"], f"step-00000010/{ZERO3[3]}")  # rank 1's optim
    ckpt = Committed("step-00000010", 10, {"world_size": 2, "files": files})

    mine = files_to_fetch(ckpt.manifest, 0, 2)
    assert manager.download(store, ckpt, tmp_path / "r0", mine) == []
    assert sorted(p.name for p in (tmp_path / "r0").iterdir()) == mine
    theirs = files_to_fetch(ckpt.manifest, 1, 2)
    assert manager.download(store, ckpt, tmp_path / "r1", theirs) == [
        f"{ZERO3[3]}: sha256 mismatch"
    ]
