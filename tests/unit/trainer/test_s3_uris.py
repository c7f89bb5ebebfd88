"""An s3:// URI names one object or one folder, never a string prefix; a missing one is bad
input naming the spec field and the key. Against a real S3 server (moto)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kubetune_trainer import data, model
from kubetune_trainer.config import StorageConfig
from kubetune_trainer.contract import s3_credential_env
from kubetune_trainer.errors import BadInputError
from kubetune_trainer.storage import S3Storage

pytestmark = pytest.mark.unit


def put(s3: Any, bucket: str, objects: dict[str, bytes]) -> None:
    client = s3.client()
    for key, body in objects.items():
        client.put_object(Bucket=bucket, Key=key, Body=body)


def test_model_folder_beside_its_lora_folder_fetches_only_itself(
    tmp_path: Path, s3_server: Any, s3_bucket: str
) -> None:
    """s3://b/llama-3.1-8b must not pick up llama-3.1-8b-support-lora/... (it used to, then 404)."""
    put(
        s3_server,
        s3_bucket,
        {
            "llama-3.1-8b/config.json": b"{}",
            "llama-3.1-8b/model.safetensors": b"weights",
            "llama-3.1-8b-support-lora/adapter_config.json": b"{}",
        },
    )
    conn = StorageConfig(endpoint=s3_server.endpoint)
    got = Path(model.fetch(f"s3://{s3_bucket}/llama-3.1-8b", tmp_path, storage=conn))
    assert sorted(p.name for p in got.rglob("*") if p.is_file()) == [
        "config.json",
        "model.safetensors",
    ]


def test_train_file_beside_its_backup_reads_only_the_file(
    tmp_path: Path, s3_server: Any, s3_bucket: str
) -> None:
    """s3://b/chat/train.jsonl must not also fetch train.jsonl.bak."""
    put(
        s3_server,
        s3_bucket,
        {"chat/train.jsonl": b'{"text": "hi"}\n', "chat/train.jsonl.bak": b"not json"},
    )
    conn = StorageConfig(endpoint=s3_server.endpoint)
    files = data.resolve_files(f"s3://{s3_bucket}/chat/train.jsonl", tmp_path, conn)
    assert len(files) == 1 and files[0].read_text() == '{"text": "hi"}\n'


def test_data_folder_with_a_trailing_slash_is_the_folder(
    tmp_path: Path, s3_server: Any, s3_bucket: str
) -> None:
    put(s3_server, s3_bucket, {"d/train/a.jsonl": b"{}\n", "d/train-old/b.jsonl": b"{}\n"})
    conn = StorageConfig(endpoint=s3_server.endpoint)
    for uri in (f"s3://{s3_bucket}/d/train/", f"s3://{s3_bucket}/d/train"):
        files = data.resolve_files(uri, tmp_path / uri[-1], conn)
        assert [f.name for f in files] == ["a.jsonl"]


@pytest.mark.parametrize(
    ("field", "key"),
    [("spec.model.source", "models/missing"), ("spec.dataset.validation", "data/val.jsonl")],
)
def test_a_missing_object_names_the_field_and_the_key(
    tmp_path: Path, s3_server: Any, s3_bucket: str, field: str, key: str
) -> None:
    """Nothing there is bad input (exit 44, not retried), not a 404 deep in a download."""
    put(s3_server, s3_bucket, {"models/missing-lora/config.json": b"{}", "data/val.jsonl.x": b""})
    conn = StorageConfig(endpoint=s3_server.endpoint)
    uri = f"s3://{s3_bucket}/{key}"
    with pytest.raises(BadInputError) as e:
        if field == "spec.model.source":
            model.fetch(uri, tmp_path, storage=conn)
        else:
            data.resolve_files(uri, tmp_path, conn, field)
    assert field in str(e.value) and repr(key) in str(e.value)


def test_a_missing_bucket_is_bad_input(tmp_path: Path, s3_server: Any) -> None:
    conn = StorageConfig(endpoint=s3_server.endpoint)
    with pytest.raises(BadInputError, match=r"spec\.model\.source.*no bucket 'kt-nowhere'"):
        model.fetch("s3://kt-nowhere/base", tmp_path, storage=conn)


def test_a_checkpoint_root_does_not_see_a_sibling_jobs_checkpoints(
    s3_server: Any, s3_bucket: str
) -> None:
    """s3://b/ckpt/job lists and deletes within job/, never job-2/."""
    put(s3_server, s3_bucket, {"ckpt/job/step-1/a": b"1", "ckpt/job-2/step-9/a": b"2"})
    store = S3Storage(s3_bucket, "ckpt/job", StorageConfig(endpoint=s3_server.endpoint))
    assert store.list("") == {"step-1/a": 1}
    assert store.list("step-1") == {"step-1/a": 1}
    assert store.list("step") == {}
    store.delete_prefix("")
    left = s3_server.client().list_objects_v2(Bucket=s3_bucket)["Contents"]
    assert [o["Key"] for o in left] == ["ckpt/job-2/step-9/a"]


def test_each_store_signs_with_its_own_key(
    tmp_path: Path, keyed_s3_pair: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Model in store A behind key A, checkpoints in store B behind key B, in one process:
    each client reads its store's variables (as the operator renders them from each secret)."""
    a, b = keyed_s3_pair
    a.client().create_bucket(Bucket="models-a")
    a.client().put_object(Bucket="models-a", Key="base/config.json", Body=b"{}")
    b.client().create_bucket(Bucket="ckpt-b")
    for store, server in (("model", a), ("checkpoint", b)):
        for key, var in s3_credential_env(store).items():  # type: ignore[arg-type]
            if key in server.secret():
                monkeypatch.setenv(var, server.secret()[key])
    got = model.fetch(
        "s3://models-a/base", tmp_path, storage=StorageConfig(store="model", endpoint=a.endpoint)
    )
    assert Path(got, "config.json").read_text() == "{}"
    ckpt = S3Storage("ckpt-b", "job", StorageConfig(store="checkpoint", endpoint=b.endpoint))
    ckpt.put_bytes(b"x", "step-1/a")
    assert ckpt.list("") == {"step-1/a": 1}
    wrong = S3Storage("ckpt-b", "job", StorageConfig(store="model", endpoint=b.endpoint))
    with pytest.raises(Exception, match="InvalidAccessKeyId"):
        wrong.list("")
