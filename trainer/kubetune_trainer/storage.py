"""Object storage behind a small protocol with string URIs: file:// (and plain paths) and s3://.
The one store layer: model and data downloads, checkpoints and the export all go through it.

S3 settings come from the store's config (endpoint, region) and its own credential variables
(config.s3_credential_env), falling back to the standard AWS chain; path-style addressing so
service DNS names and local servers work. A key names one object or one folder, never a string
prefix: s3://b/models/llama is the object `models/llama` or the keys under `models/llama/`,
never `models/llama-lora/...`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from .config import StorageConfig
from .contract import s3_credential_env
from .errors import BadInputError


class Storage(Protocol):
    """The few operations checkpoints, model download and export need."""

    def put_file(self, local: Path, key: str) -> None: ...
    def put_bytes(self, data: bytes, key: str) -> None: ...
    def get_file(self, key: str, local: Path) -> None: ...
    def get_bytes(self, key: str) -> bytes | None: ...
    def list(self, prefix: str) -> dict[str, int]: ...
    def delete_prefix(self, prefix: str) -> None: ...


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, streamed."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def join(*parts: str) -> str:
    """Join key parts with single slashes."""
    return "/".join(p.strip("/") for p in parts if p.strip("/"))


def safe_relative(name: object) -> str | None:
    """`name` if it is a plain relative path (segments, no '', '.' or '..', not absolute),
    else None: a key or manifest entry like `x/../../etc` or `x//abs` never leaves its folder."""
    if not isinstance(name, str) or not name or "\x00" in name:
        return None
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return None
    return name


def inside(root: Path, name: str, what: str) -> Path:
    """root/name, refused (bad input naming `what` and the name) unless name is a plain
    relative path: checked before anything is written."""
    if safe_relative(name) is None:
        raise BadInputError(f"{what}: {name!r} is not a plain relative path: refused")
    return root / name


class FileStorage:
    """A directory tree; keys are relative paths that stay inside it."""

    def __init__(self, root: str) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        key = key.rstrip("/")  # a folder: delete_prefix("step-00000010/")
        return inside(self.root, key, f"key under {self.root}") if key else self.root

    def put_file(self, local: Path, key: str) -> None:
        dst = self._path(key)
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(dst.name + ".partial")
        shutil.copyfile(local, tmp)
        os.replace(tmp, dst)

    def put_bytes(self, data: bytes, key: str) -> None:
        dst = self._path(key)
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(dst.name + ".partial")
        tmp.write_bytes(data)
        os.replace(tmp, dst)

    def get_file(self, key: str, local: Path) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self._path(key), local)

    def get_bytes(self, key: str) -> bytes | None:
        p = self._path(key)
        return p.read_bytes() if p.is_file() else None

    def list(self, prefix: str) -> dict[str, int]:
        base = self._path(prefix)
        if not base.exists():
            return {}
        if base.is_file():
            return {prefix: base.stat().st_size}
        return {
            str(p.relative_to(self.root)): p.stat().st_size
            for p in sorted(base.rglob("*"))
            if p.is_file() and not p.name.endswith(".partial")
        }

    def delete_prefix(self, prefix: str) -> None:
        shutil.rmtree(self._path(prefix), ignore_errors=True)


class S3Storage:
    """A bucket and key prefix on S3 or an S3-compatible store."""

    def __init__(self, bucket: str, prefix: str, storage: StorageConfig) -> None:
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self._settings = storage
        self._client: Any = None

    @property
    def client(self) -> Any:
        """A boto3 client, made lazily (one per thread is not needed: boto3 clients are thread-safe)."""
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.client(
                "s3",
                **s3_credentials(self._settings),
                endpoint_url=self._settings.endpoint
                or os.environ.get("AWS_ENDPOINT_URL_S3")
                or os.environ.get("AWS_ENDPOINT_URL"),
                region_name=self._settings.region
                or os.environ.get("AWS_DEFAULT_REGION")
                or os.environ.get("AWS_REGION"),
                config=Config(
                    s3={"addressing_style": "path"}, retries={"max_attempts": 5, "mode": "standard"}
                ),
            )
        return self._client

    def _key(self, key: str) -> str:
        return join(self.prefix, key)

    def put_file(self, local: Path, key: str) -> None:
        self.client.upload_file(str(local), self.bucket, self._key(key))

    def put_bytes(self, data: bytes, key: str) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def get_file(self, key: str, local: Path) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        self.client.download_file(self.bucket, self._key(key), str(local))

    def get_bytes(self, key: str) -> bytes | None:
        try:
            return bytes(
                self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
            )
        except self.client.exceptions.NoSuchKey:
            return None

    def list(self, prefix: str) -> dict[str, int]:
        """The object `prefix` names, or every object in the folder `prefix/`, like FileStorage."""
        full = self._key(prefix)
        cut = len(self.prefix) + 1 if self.prefix else 0
        out = {
            key[cut:]: size for key, size in self._list_under(full + "/" if full else "").items()
        }
        if out or not full:
            return out
        first = self.client.list_objects_v2(Bucket=self.bucket, Prefix=full, MaxKeys=1)
        obj = (first.get("Contents") or [{}])[0]
        return {full[cut:]: int(obj["Size"])} if obj.get("Key") == full else {}

    def _list_under(self, key_prefix: str) -> dict[str, int]:
        """Every key starting with key_prefix (callers pass a folder: it ends with '/')."""
        out: dict[str, int] = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=key_prefix
        ):
            for obj in page.get("Contents", []):
                out[obj["Key"]] = int(obj["Size"])
        return out

    def delete_prefix(self, prefix: str) -> None:
        keys = [self._key(k) for k in self.list(prefix)]
        for i in range(0, len(keys), 1000):
            self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in keys[i : i + 1000]]}
            )


def s3_credentials(settings: StorageConfig) -> dict[str, str]:
    """boto3 client keys from the store's own variables; {} (the default AWS chain) when its
    access key variable is unset, e.g. in a local run without secrets."""
    if settings.store is None:
        return {}
    names = s3_credential_env(settings.store)
    access = os.environ.get(names["AWS_ACCESS_KEY_ID"])
    if not access:
        return {}
    out = {
        "aws_access_key_id": access,
        "aws_secret_access_key": os.environ.get(names["AWS_SECRET_ACCESS_KEY"], ""),
    }
    token = os.environ.get(names["AWS_SESSION_TOKEN"])
    if token:
        out["aws_session_token"] = token
    return out


def download(uri: str, field: str, storage: StorageConfig, dest: Path) -> Path:
    """Fetch the object or folder an s3:// URI names into dest; the local file or folder.

    Nothing there is bad input (exit 44, not retried), named by the spec field and the key: a
    retry finds the same empty store.
    """
    parsed = urlparse(uri)
    if not parsed.netloc:
        raise BadInputError(f"{field}: {uri!r}: an s3:// URI needs a bucket")
    store = S3Storage(parsed.netloc, parsed.path, storage)
    try:
        keys = store.list("")
    except store.client.exceptions.NoSuchBucket:
        raise BadInputError(f"{field}: {uri!r}: no bucket {parsed.netloc!r}") from None
    if not keys:
        key = parsed.path.strip("/")
        raise BadInputError(
            f"{field}: {uri!r}: bucket {parsed.netloc!r} has no object {key!r} and no folder "
            f"{key + '/'!r}"
        )
    if list(keys) == [""]:
        store.get_file("", dest)
        return dest
    targets = {key: inside(dest, key, f"{field}: {uri!r}: object key") for key in keys}
    for key, target in targets.items():
        store.get_file(key, target)
    return dest


def open_storage(uri: str, storage: StorageConfig | None = None) -> Storage:
    """Storage for a URI: s3://bucket/prefix, file:///path, pvc://claim/path (mounted) or a plain path."""
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise BadInputError(f"{uri!r}: an s3:// URI needs a bucket")
        return S3Storage(parsed.netloc, parsed.path, storage or StorageConfig())
    return FileStorage(local_path(uri))


def local_path(uri: str) -> str:
    """The filesystem path of file://, pvc:// (mounted at /mnt/<claim> unless it is a path) or a plain path."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return parsed.path if parsed.scheme else uri
    if parsed.scheme == "pvc":
        root = os.environ.get("KUBETUNE_PVC_ROOT", "/mnt")
        return str(Path(root) / parsed.netloc / parsed.path.lstrip("/"))
    raise BadInputError(
        f"{uri!r}: unsupported scheme {parsed.scheme!r} (use s3://, file://, pvc:// or a path)"
    )
