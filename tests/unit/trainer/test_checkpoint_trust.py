"""What a job restores and deletes in its checkpoint store: only what it signed. Foreign,
forged, corrupt or path-traversing records are skipped (never downloaded, never written outside
the download folder, never unpickled) and two jobs sharing a URI keep apart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kubetune_trainer.checkpoint import manager, manifest
from kubetune_trainer.checkpoint.seal import Seal
from kubetune_trainer.config import StorageConfig
from kubetune_trainer.errors import BadInputError
from kubetune_trainer.storage import FileStorage, S3Storage, Storage, download

pytestmark = pytest.mark.unit

KEY = b"the namespace's key"
MINE = Seal(KEY, "team/job-a")
SIBLING = Seal(KEY, "team/job-b")  # another job of the namespace, same URI by mistake
STRANGER = Seal(b"another namespace's key", "other/job-a")


def save(store: Storage, tmp: Path, step: int, seal: Seal) -> str:
    """One rank's checkpoint at `step`, claimed, uploaded and committed by `seal`'s job."""
    tag = manifest.tag_for(step)
    folder = tmp / f"{seal.job.replace('/', '-')}-{step}"
    folder.mkdir(parents=True)
    (folder / "mp_rank_00_model_states.pt").write_bytes(f"{seal.job} {step}".encode() * 50)
    manager.claim(store, tag, seal, "store")
    manager.upload_rank(store, folder, tag, 0, seal)
    manager.commit(store, tag, step, 1, timeout=5, extra={}, seal=seal)
    return tag


def forge(store: Storage, tag: str, files: dict[str, bytes], signer: Seal | None) -> None:
    """A checkpoint folder written by someone else: files and a manifest with the right
    sizes and checksums, signed with another key (or not at all)."""
    import hashlib

    for name, body in files.items():
        store.put_bytes(body, f"{tag}/{name}")
    m = {
        "tag": tag,
        "step": manifest.step_of(tag),
        "world_size": 1,
        "files": {
            n: {"size": len(b), "sha256": hashlib.sha256(b).hexdigest()} for n, b in files.items()
        },
    }
    body = signer.sign(m) if signer else m
    store.put_bytes(json.dumps(body).encode(), f"{tag}/manifest.json")


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "file":
        return FileStorage(str(tmp_path / "store"))
    s3 = request.getfixturevalue("s3_server")
    return S3Storage(
        request.getfixturevalue("s3_bucket"), "ckpt", StorageConfig(endpoint=s3.endpoint)
    )


def test_only_checkpoints_signed_by_this_job_are_candidates(store: Storage, tmp_path: Path) -> None:
    save(store, tmp_path, 10, MINE)
    forge(store, "step-00000090", {"mp_rank_00_model_states.pt": b"evil"}, None)
    forge(store, "step-00000080", {"mp_rank_00_model_states.pt": b"evil"}, STRANGER)
    save(store, tmp_path, 70, SIBLING)
    good, skipped = manifest.committed(store, MINE)
    assert [c.step for c in good] == [10]
    assert "not signed" in skipped["step-00000090"][0]
    assert "not signed" in skipped["step-00000080"][0]
    assert "committed by job team/job-b" in skipped["step-00000070"][0]
    # Named explicitly (checkpoint.resume), a sibling's is fine; a stranger's never.
    named, _ = manifest.committed(store, MINE, any_job=True)
    assert [c.step for c in named] == [70, 10]


def test_a_manifest_copied_to_another_folder_does_not_verify_there(
    store: Storage, tmp_path: Path
) -> None:
    tag = save(store, tmp_path, 10, MINE)
    for name in store.list(tag):
        store.put_bytes(store.get_bytes(name) or b"", name.replace(tag, "step-00000099"))
    good, skipped = manifest.committed(store, MINE)
    assert [c.tag for c in good] == [tag]
    assert "not of this folder" in skipped["step-00000099"][0]


def test_a_tampered_signed_manifest_is_refused(store: Storage, tmp_path: Path) -> None:
    tag = save(store, tmp_path, 10, MINE)
    m = json.loads(store.get_bytes(f"{tag}/manifest.json") or b"")
    m["files"]["mp_rank_00_model_states.pt"]["sha256"] = "0" * 64
    store.put_bytes(json.dumps(m).encode(), f"{tag}/manifest.json")
    good, skipped = manifest.committed(store, MINE)
    assert good == [] and "not signed" in skipped[tag][0]


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b"[]", b'"a string"', b"\xff\xfe", b'{"files": 7, "signature": "x"}'],
)
def test_a_corrupt_manifest_skips_that_checkpoint_and_pruning_goes_on(
    store: Storage, tmp_path: Path, raw: bytes
) -> None:
    for step in (10, 20, 30):
        save(store, tmp_path, step, MINE)
    store.put_bytes(raw, "step-00000030/manifest.json")
    good, skipped = manifest.committed(store, MINE)
    assert [c.step for c in good] == [20, 10] and skipped["step-00000030"]
    pruned = manager.prune(store, keep_last=1, seal=MINE)
    assert pruned == manager.Pruned(deleted=["step-00000010"], kept=["step-00000020"])


def test_pruning_deletes_only_this_jobs_folders(store: Storage, tmp_path: Path) -> None:
    for step in (10, 20, 30):
        save(store, tmp_path, step, MINE)
    save(store, tmp_path, 5, SIBLING)
    forge(store, "step-00000001", {"a.pt": b"someone's"}, None)
    pruned = manager.prune(store, keep_last=1, seal=MINE)
    assert pruned.deleted == ["step-00000010", "step-00000020"]
    left = sorted(manifest.tags_in(store.list("")))
    assert left == ["step-00000001", "step-00000005", "step-00000030"]
    good, _ = manifest.committed(store, SIBLING)
    assert [c.step for c in good] == [5]  # the sibling's checkpoint is intact


def test_a_job_never_writes_into_a_folder_another_job_holds(store: Storage, tmp_path: Path) -> None:
    save(store, tmp_path, 10, SIBLING)
    forge(store, "step-00000020", {"a.pt": b"legacy"}, None)
    for tag, whose in (("step-00000010", "team/job-b"), ("step-00000020", "an unknown writer")):
        with pytest.raises(BadInputError, match=f"spec.checkpoint.uri: .*{tag} is held by {whose}"):
            manager.claim(store, tag, MINE, "store")
    manager.claim(store, "step-00000030", MINE, "store")
    manager.claim(store, "step-00000030", MINE, "store")  # its own again: fine


@pytest.mark.parametrize("name", ["../escaped.pt", "a/../../escaped.pt", "/tmp/escaped.pt", "a//b"])
def test_a_manifest_entry_leaving_the_folder_is_refused_before_any_write(
    tmp_path: Path, name: str
) -> None:
    store = FileStorage(str(tmp_path / "store"))
    save(store, tmp_path, 10, MINE)
    m = json.loads(store.get_bytes("step-00000010/manifest.json") or b"")
    m["files"][name] = {"size": 4, "sha256": "0" * 64}
    store.put_bytes(json.dumps(MINE.sign(m)).encode(), "step-00000010/manifest.json")
    good, skipped = manifest.committed(store, MINE)
    assert good == [] and any("not a plain relative path" in p for p in skipped["step-00000010"])
    dest = tmp_path / "restore" / "step-00000010"
    ckpt = manifest.Committed("step-00000010", 10, m)
    with pytest.raises(BadInputError, match="not a plain relative path"):
        manager.download(store, ckpt, dest, [name])
    assert not list(tmp_path.rglob("escaped.pt"))


@pytest.mark.parametrize("key", ["m/../../escaped.bin", "m//tmp/escaped.bin"])
def test_an_s3_key_leaving_the_download_folder_is_refused_naming_the_field(
    s3_server: Any, s3_bucket: str, tmp_path: Path, key: str
) -> None:
    client = s3_server.client()
    client.put_object(Bucket=s3_bucket, Key="m/config.json", Body=b"{}")
    client.put_object(Bucket=s3_bucket, Key=key, Body=b"payload")
    dest = tmp_path / "inputs" / "model"
    with pytest.raises(BadInputError, match=r"spec\.model\.source: .*not a plain relative path"):
        download(
            f"s3://{s3_bucket}/m",
            "spec.model.source",
            StorageConfig(endpoint=s3_server.endpoint),
            dest,
        )
    assert not list(tmp_path.rglob("escaped.bin")) and not Path("/tmp/escaped.bin").exists()
    assert not (dest / "config.json").exists()  # refused before the first write
