"""A rank's RNG states survive a checkpoint: after load() the generators draw exactly what they
would have drawn had the process never stopped (dropout masks included)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from kubetune_trainer.checkpoint import rng
from kubetune_trainer.checkpoint.manager import CheckpointManager
from kubetune_trainer.checkpoint.manifest import files_to_fetch, reader_rank, rng_file
from kubetune_trainer.checkpoint.seal import Seal
from kubetune_trainer.config import CheckpointConfig

pytestmark = pytest.mark.unit

SEAL = Seal(b"namespace key", "team/job")


def draws() -> tuple[list[float], list[float], list[float], list[float]]:
    """A few numbers from every generator, and a dropout mask."""
    mask = torch.nn.functional.dropout(torch.ones(64), p=0.5, training=True)
    return (
        [random.random() for _ in range(3)],
        np.random.random(3).tolist(),
        torch.rand(3).tolist(),
        mask.tolist(),
    )


def test_load_continues_every_stream_where_save_left_it(tmp_path: Path) -> None:
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    draws()
    random.gauss(0, 1)  # leaves a cached Gaussian in Python's state
    rng.save(tmp_path / rng_file(0))
    expected = draws()

    random.seed(2)  # what a restarted process does in setup
    np.random.seed(2)
    torch.manual_seed(2)
    assert draws() != expected
    rng.load(tmp_path / rng_file(0))
    assert draws() == expected


def test_the_file_loads_without_unpickling_code(tmp_path: Path) -> None:
    rng.save(tmp_path / "s.pt")
    state = torch.load(tmp_path / "s.pt", weights_only=True)
    assert set(state) == {"python", "numpy", "torch", "cuda"}


def test_each_rank_fetches_only_its_own_rng_states() -> None:
    names = [rng_file(r) for r in range(12)] + ["mp_rank_00_model_states.pt"]
    manifest = {"world_size": 12, "files": {n: {} for n in names}}
    assert rng_file(3) == "rng_state_rank_00003.pt" and reader_rank(rng_file(3)) == 3
    assert files_to_fetch(manifest, 3, 12) == ["mp_rank_00_model_states.pt", rng_file(3)]


class FakeEngine:
    """Saves and loads one shard file the way DeepSpeed lays out a checkpoint folder."""

    def save_checkpoint(self, save_dir: str, tag: str, **_: object) -> None:
        folder = Path(save_dir) / tag
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "zero_pp_rank_0_mp_rank_00_optim_states.pt").write_bytes(b"shard")
        torch.rand(5)  # whatever DeepSpeed draws while saving, the next step starts after it

    def load_checkpoint(self, load_dir: str, tag: str, **_: object) -> tuple[str, dict[str, int]]:
        assert (Path(load_dir) / tag / "zero_pp_rank_0_mp_rank_00_optim_states.pt").is_file()
        return load_dir, {"step": 10}


def test_a_resumed_manager_continues_the_streams_of_the_saved_run(tmp_path: Path) -> None:
    cfg = CheckpointConfig(uri=f"file://{tmp_path}/store", local_dir=str(tmp_path / "local"))
    saver = CheckpointManager(cfg, rank=0, world_size=1, job_key="job", seal=SEAL)
    saver.save(FakeEngine(), 10, {"step": 10}, exclude_frozen=False)
    saver.wait()
    expected = draws()

    torch.manual_seed(0)  # the new attempt seeds in setup
    restored = CheckpointManager(cfg, rank=0, world_size=1, job_key="job", seal=SEAL).restore(
        FakeEngine(), lambda ok: ok, exclude_frozen=False
    )
    assert restored is not None and restored.rng_restored
    assert rng_file(0) in restored.fetched
    assert draws() == expected


def test_a_rejected_checkpoint_leaves_no_download_behind(tmp_path: Path) -> None:
    cfg = CheckpointConfig(uri=f"file://{tmp_path}/store", local_dir=str(tmp_path / "local"))
    saver = CheckpointManager(cfg, rank=0, world_size=1, job_key="job", seal=SEAL)
    for step in (10, 20):
        saver.save(FakeEngine(), step, {"step": step}, exclude_frozen=False)
        saver.wait()
    newest = sorted((tmp_path / "store").iterdir())[-1]
    (newest / "zero_pp_rank_0_mp_rank_00_optim_states.pt").write_bytes(b"torn!")  # sha differs

    manager = CheckpointManager(cfg, rank=0, world_size=1, job_key="job", seal=SEAL)
    restored = manager.restore(FakeEngine(), lambda ok: ok, exclude_frozen=False)
    assert restored is not None and restored.step == 10
    assert newest.name in restored.skipped
    assert not (manager.local / "restore" / newest.name).exists()
