"""Checkpoint commit, validity, torn-checkpoint skipping and retention on file:// and real S3."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from kubetune_trainer.checkpoint import listing, manager, manifest
from kubetune_trainer.checkpoint.seal import Seal
from kubetune_trainer.config import CheckpointConfig, StorageConfig
from kubetune_trainer.storage import FileStorage, S3Storage, Storage

pytestmark = pytest.mark.unit

SEAL = Seal(b"namespace key", "team/job")


def rank_folder(tmp: Path, rank: int, step: int) -> Path:
    """A fake DeepSpeed save of one rank (file contents depend on rank and step)."""
    f = tmp / f"r{rank}-s{step}"
    f.mkdir(parents=True)
    (f / f"zero_pp_rank_{rank}_optim_states.pt").write_bytes(f"optim {rank} {step}".encode() * 100)
    if rank == 0:
        (f / "mp_rank_00_model_states.pt").write_bytes(f"model {step}".encode() * 100)
    return f


def publish(
    store: Storage,
    tmp: Path,
    step: int,
    world: int = 2,
    ranks: list[int] | None = None,
    commit: bool = True,
    eval_loss: float | None = None,
) -> str:
    tag = manifest.tag_for(step)
    manager.claim(store, tag, SEAL, "store")
    for r in ranks if ranks is not None else range(world):
        manager.upload_rank(store, rank_folder(tmp, r, step), tag, r, SEAL)
    if commit:
        extra = {"metrics": {"train_loss": 2.0, "eval_loss": eval_loss}, "time": f"t{step}"}
        manager.commit(store, tag, step, world, timeout=5, extra=extra, seal=SEAL)
    return tag


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "file":
        return FileStorage(str(tmp_path / "store"))
    s3 = request.getfixturevalue("s3_server")
    bucket = request.getfixturevalue("s3_bucket")
    return S3Storage(bucket, "ckpt/job", StorageConfig(endpoint=s3.endpoint))


def test_manifest_lists_every_rank_file_with_size_and_sha(store: Storage, tmp_path: Path) -> None:
    tag = publish(store, tmp_path, 10)
    m = json.loads(store.get_bytes(f"{tag}/manifest.json") or b"")
    assert m["step"] == 10 and m["world_size"] == 2
    assert set(m["files"]) == {
        "zero_pp_rank_0_optim_states.pt",
        "zero_pp_rank_1_optim_states.pt",
        "mp_rank_00_model_states.pt",
    }
    assert all(len(f["sha256"]) == 64 and f["size"] > 0 for f in m["files"].values())


def test_commit_waits_for_all_ranks(store: Storage, tmp_path: Path) -> None:
    tag = publish(store, tmp_path, 5, ranks=[0], commit=False)
    with pytest.raises(TimeoutError, match=r"ranks \[1\]"):
        manager.commit(store, tag, 5, 2, timeout=0.3, extra={}, seal=SEAL)
    assert store.get_bytes(f"{tag}/manifest.json") is None
    late = threading.Timer(
        0.3, lambda: manager.upload_rank(store, rank_folder(tmp_path, 1, 55), tag, 1, SEAL)
    )
    late.start()
    manager.commit(store, tag, 5, 2, timeout=10, extra={}, seal=SEAL)
    late.join()
    assert manifest.committed(store, SEAL)[0][0].tag == tag


def test_torn_checkpoints_are_skipped_for_the_previous_one(store: Storage, tmp_path: Path) -> None:
    publish(store, tmp_path, 10)
    publish(store, tmp_path, 20, ranks=[0], commit=False)  # upload cut: rank 1 never finished
    tag30 = publish(store, tmp_path, 30)
    store.put_bytes(b"x", f"{tag30}/mp_rank_00_model_states.pt")  # a file replaced: size differs
    good, skipped = manifest.committed(store, SEAL)
    assert [c.step for c in good] == [10]
    assert "no manifest" in skipped["step-00000020"][0] and "size" in skipped["step-00000030"][0]


def test_checksum_mismatch_is_found_after_download(store: Storage, tmp_path: Path) -> None:
    tag = publish(store, tmp_path, 10)
    name = "zero_pp_rank_1_optim_states.pt"
    body = store.get_bytes(f"{tag}/{name}") or b""
    store.put_bytes(b"Z" + body[1:], f"{tag}/{name}")  # same size, different bytes
    good, _ = manifest.committed(store, SEAL)
    assert manager.download(store, good[0], tmp_path / "dl") == [f"{name}: sha256 mismatch"]


def test_keep_last_prunes_older_folders_only(store: Storage, tmp_path: Path) -> None:
    for step in (10, 20, 30):
        publish(store, tmp_path, step)
    publish(store, tmp_path, 40, ranks=[0], commit=False)  # in progress: must survive
    pruned = manager.prune(store, keep_last=2, seal=SEAL)
    assert (pruned.deleted, pruned.kept) == (["step-00000010"], ["step-00000030", "step-00000020"])
    assert sorted(manifest.tags_in(store.list(""))) == [
        "step-00000020",
        "step-00000030",
        "step-00000040",
    ]


@pytest.mark.parametrize(
    ("keep_best", "deleted"),
    [(False, ["step-00000010", "step-00000020"]), (True, ["step-00000010"])],
)
def test_keep_best_spares_the_lowest_eval_loss_from_pruning(
    tmp_path: Path, keep_best: bool, deleted: list[str]
) -> None:
    store = FileStorage(str(tmp_path / "store"))
    for step, loss in ((10, 1.0), (20, 0.5), (30, 0.8), (40, 0.9)):
        publish(store, tmp_path, step, eval_loss=loss)
    assert manager.prune(store, 2, SEAL, keep_best=keep_best).deleted == deleted


def test_listing_is_newest_first_bounded_with_the_best_marked_and_kept(tmp_path: Path) -> None:
    store = FileStorage(str(tmp_path / "store"))
    for step, loss in ((10, 0.4), (20, None), (30, 0.8), (40, 0.9)):
        publish(store, tmp_path, step, eval_loss=loss)
    good, _ = manifest.committed(store, SEAL)
    full = listing.listing(good, "s3://b/ck")
    assert [(e["step"], e.get("best")) for e in full] == [
        (40, None),
        (30, None),
        (20, None),
        (10, True),
    ]
    assert full[-1] == {"step": 10, "time": "t10", "trainLoss": 2.0, "evalLoss": 0.4,
                        "uri": "s3://b/ck/step-00000010", "best": True}  # fmt: skip
    assert "evalLoss" not in full[2]  # no evaluation fell on step 20
    assert [e["step"] for e in listing.listing(good, "s3://b/ck", limit=2)] == [40, 10]


@pytest.mark.parametrize(
    ("last", "expected"),
    [((40, 0.9), 10), ((40, 0.3), 40), ((40, None), 10), ((40, 0.4), 10)],
)
def test_best_evaluated_weighs_the_last_step_against_the_listed_checkpoints(
    last: tuple[int, float | None], expected: int
) -> None:
    listed = [{"step": 30, "evalLoss": 0.8}, {"step": 20}, {"step": 10, "evalLoss": 0.4}]
    assert listing.best_evaluated(listed, last) == expected  # a tie goes to the earlier step
    assert listing.best_evaluated([], (40, None)) == 40


def rank0_manager(tmp: Path, keep_last: int) -> manager.CheckpointManager:
    """Rank 0 of a one-rank run with a file:// store under tmp."""
    cfg = CheckpointConfig(
        uri=f"file://{tmp}/store", keep_last=keep_last, local_dir=str(tmp / "local")
    )
    return manager.CheckpointManager(cfg, rank=0, world_size=1, job_key="job", seal=SEAL)


def test_rank0_reports_latest_with_the_count_kept_after_pruning(tmp_path: Path) -> None:
    m = rank0_manager(tmp_path, keep_last=2)
    counts = []
    for step in (10, 20, 30):
        tag = manifest.tag_for(step)
        assert m.store is not None
        manager.claim(m.store, tag, SEAL, "store")  # what save() does first
        m._publish(rank_folder(tmp_path, 0, step), tag, step, {"time": "2026-01-01T00:00:00Z"})
        m.wait()
        counts.append((m.last_committed or {}).get("count"))
    assert counts == [1, 2, 2]  # the third commit pruned step 10 before it was reported
    committed = (m.last_committed or {}).pop("committed")
    assert m.last_committed == {
        "tag": "step-00000030",
        "step": 30,
        "uri": f"file://{tmp_path}/store/step-00000030",
        "time": "2026-01-01T00:00:00Z",
        "count": 2,
    }
    assert [(c["step"], c["uri"]) for c in committed] == [
        (30, f"file://{tmp_path}/store/step-00000030"),
        (20, f"file://{tmp_path}/store/step-00000020"),
    ]


def test_count_counts_checkpoints_of_earlier_attempts_still_in_the_store(tmp_path: Path) -> None:
    earlier = FileStorage(str(tmp_path / "store"))
    publish(earlier, tmp_path, 10, world=1)
    m = rank0_manager(tmp_path, keep_last=3)
    m._publish(rank_folder(tmp_path, 0, 20), "step-00000020", 20, {"time": "t"})
    m.wait()
    assert m.last_committed is not None and m.last_committed["count"] == 2


def test_a_failed_prune_still_reports_the_commit_without_a_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = rank0_manager(tmp_path, keep_last=1)
    m.commit_timeout = 0.0  # no retries

    def broken(store: Storage, keep_last: int, seal: Seal, keep_best: bool) -> manager.Pruned:
        raise OSError("store gone")

    monkeypatch.setattr(manager, "prune", broken)
    m._publish(rank_folder(tmp_path, 0, 10), "step-00000010", 10, {"time": "t"})
    assert m.last_committed is not None and m.last_committed["step"] == 10
    assert "count" not in m.last_committed
    with pytest.raises(RuntimeError, match="store gone"):
        m.wait()


def test_to_delete_never_removes_newer_uncommitted() -> None:
    assert manifest.to_delete(
        ["step-00000001", "step-00000002", "step-00000003"], ["step-00000002"], 1
    ) == ["step-00000001"]
    assert manifest.to_delete(["step-00000001"], [], 3) == []


def test_s3_listing_paginates(s3_server: Any, s3_bucket: str, tmp_path: Path) -> None:
    st = S3Storage(s3_bucket, "many", StorageConfig(endpoint=s3_server.endpoint))
    for i in range(1005):
        st.client.put_object(Bucket=s3_bucket, Key=f"many/k{i:05d}", Body=b"")
    assert len(st.list("")) == 1005
