"""List a data prefix and say what is there: python -m kubetune_trainer.datawatch --prefix URI.

A FineTuneSchedule's new-data trigger runs this in a short-lived pod with the data store's
credentials (the operator never holds them) and reads the result from the container's
termination message: a digest of the whole listing (keys, sizes, ETags), which changes when
anything under the prefix does, and the entries directly under it (files or folders: data
drops), newest first, each with its own digest. Exit 1 (message in the termination log) when
the prefix cannot be listed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from typing import Any
from urllib.parse import urlparse

from .config import StorageConfig
from .contract import TERMINATION_LOG
from .storage import S3Storage

MAX_ENTRIES = 20
MAX_MESSAGE = 4096  # what a termination message holds


def digest(lines: list[str]) -> str:
    """sha256 over sorted lines (a listing's identity, independent of its order)."""
    return hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()


def summarise(prefix: str, objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The listing's digest and its entries (first path part under the prefix), newest first."""
    base = prefix.rstrip("/") + "/"
    entries: dict[str, list[dict[str, Any]]] = {}
    for obj in objects:
        rest = obj["key"][len(urlparse(base).path.lstrip("/")) :]
        if not rest:
            continue
        head, slash, _ = rest.partition("/")
        entries.setdefault(head + slash, []).append(obj)
    rows = [
        {
            "uri": base + name,
            "version": digest([f"{o['key']} {o['size']} {o['etag']}" for o in objs])[:16],
            "modified": max(o["modified"] for o in objs),
        }
        for name, objs in entries.items()
    ]
    rows.sort(key=lambda r: (r["modified"], r["uri"]), reverse=True)
    return {
        "prefix": base,
        "version": digest([f"{r['uri']} {r['version']}" for r in rows])[:16],
        "objects": len(objects),
        "entries": rows[:MAX_ENTRIES],
    }


def list_s3(prefix: str, storage: StorageConfig) -> list[dict[str, Any]]:
    """key, size, etag and modification time (RFC 3339) of every object under the prefix."""
    parsed = urlparse(prefix)
    store = S3Storage(parsed.netloc, "", storage)
    key_prefix = parsed.path.strip("/") + "/" if parsed.path.strip("/") else ""
    out = []
    for page in store.client.get_paginator("list_objects_v2").paginate(
        Bucket=parsed.netloc, Prefix=key_prefix
    ):
        for obj in page.get("Contents", []):
            out.append(
                {
                    "key": obj["Key"],
                    "size": int(obj["Size"]),
                    "etag": str(obj.get("ETag", "")).strip('"'),
                    "modified": obj["LastModified"].strftime("%Y-%m-%dT%H:%M:%SZ"),
                }
            )
    return out


def fitted(result: dict[str, Any], limit: int = MAX_MESSAGE) -> str:
    """The result as compact JSON within the termination message's size (oldest entries go)."""
    entries = list(result["entries"])
    while True:
        text = json.dumps({**result, "entries": entries}, separators=(",", ":"))
        if len(text) <= limit or not entries:
            return text
        entries.pop()


def write_message(text: str) -> None:
    """Print the result and leave it where Kubernetes shows it (the kubelet makes the file;
    where it is absent, as in a run outside a pod, nothing is written)."""
    print(text)
    path = TERMINATION_LOG
    if not os.path.isfile(path):
        return
    try:
        with open(path, "w") as f:
            f.write(text[:MAX_MESSAGE])
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kubetune_trainer.datawatch", description=__doc__)
    p.add_argument("--prefix", required=True, help="s3://bucket/prefix/ to list")
    p.add_argument("--endpoint", help="S3 endpoint URL")
    p.add_argument("--region", help="S3 region")
    a = p.parse_args(argv)
    storage = StorageConfig(store="dataset", endpoint=a.endpoint, region=a.region)
    try:
        result = summarise(a.prefix, list_s3(a.prefix, storage))
    except Exception as e:  # any failure is reported, and the schedule lists again later
        write_message(f"cannot list {a.prefix}: {type(e).__name__}: {e}")
        return 1
    write_message(fitted(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
