"""The data-watch listing a schedule's new-data trigger reads, against a real S3 server (moto):
a digest that changes with any object under the prefix, the drops under it newest first, the
store's own credentials, and a failure that says what could not be listed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kubetune_trainer import datawatch
from kubetune_trainer.contract import s3_credential_env

pytestmark = pytest.mark.unit


def listing(s3: Any, prefix: str, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> dict[str, Any]:
    names = s3_credential_env("dataset")
    monkeypatch.setenv(names["AWS_ACCESS_KEY_ID"], "kubetune-test")
    monkeypatch.setenv(names["AWS_SECRET_ACCESS_KEY"], "kubetune-test-secret")
    assert (
        datawatch.main(["--prefix", prefix, "--endpoint", s3.endpoint, "--region", "us-east-1"])
        == 0
    )
    return dict(json.loads(capsys.readouterr().out))


def test_listing_tracks_new_and_changed_drops(
    s3_server: Any, s3_bucket: str, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    client = s3_server.client()
    client.put_object(Bucket=s3_bucket, Key="incoming/day-1/a.jsonl", Body=b'{"text": "a"}\n')
    client.put_object(Bucket=s3_bucket, Key="elsewhere/x.jsonl", Body=b"{}\n")
    prefix = f"s3://{s3_bucket}/incoming"
    first = listing(s3_server, prefix, monkeypatch, capsys)
    assert first["objects"] == 1 and [e["uri"] for e in first["entries"]] == [f"{prefix}/day-1/"]
    assert listing(s3_server, prefix, monkeypatch, capsys)["version"] == first["version"]

    client.put_object(Bucket=s3_bucket, Key="incoming/day-2/a.jsonl", Body=b'{"text": "b"}\n')
    client.put_object(Bucket=s3_bucket, Key="incoming/top.jsonl", Body=b'{"text": "c"}\n')
    second = listing(s3_server, prefix, monkeypatch, capsys)
    assert second["version"] != first["version"] and second["objects"] == 3
    uris = {e["uri"] for e in second["entries"]}
    assert uris == {f"{prefix}/day-1/", f"{prefix}/day-2/", f"{prefix}/top.jsonl"}
    day1 = next(e for e in second["entries"] if e["uri"].endswith("day-1/"))
    assert day1["version"] == first["entries"][0]["version"]  # unchanged drop, same digest

    client.put_object(Bucket=s3_bucket, Key="incoming/day-1/a.jsonl", Body=b'{"text": "A"}\n')
    third = listing(s3_server, prefix, monkeypatch, capsys)
    assert third["version"] != second["version"]  # same size, new content: the ETag says so


def test_an_unlistable_prefix_fails_with_the_reason(
    s3_server: Any, monkeypatch: pytest.MonkeyPatch, capsys: Any, tmp_path: Path
) -> None:
    log = tmp_path / "termination-log"
    log.write_text("")
    monkeypatch.setattr(datawatch, "TERMINATION_LOG", str(log))
    code = datawatch.main(["--prefix", "s3://no-such-bucket/in/", "--endpoint", s3_server.endpoint])
    assert code == 1
    assert "cannot list s3://no-such-bucket/in/: NoSuchBucket" in log.read_text()


def test_the_message_fits_a_termination_log() -> None:
    rows = [
        {"uri": f"s3://b/in/{'x' * 200}-{i}/", "version": "v", "modified": "t"} for i in range(20)
    ]
    text = datawatch.fitted(
        {"prefix": "s3://b/in/", "version": "v", "objects": 20, "entries": rows}
    )
    assert (
        len(text) <= 4096
        and json.loads(text)["entries"] == rows[: len(json.loads(text)["entries"])]
    )


def test_drops_are_listed_newest_first_by_their_newest_object() -> None:
    objects = [
        {"key": "in/day-1/a.jsonl", "size": 1, "etag": "a", "modified": "2026-03-01T00:00:00Z"},
        {"key": "in/day-1/b.jsonl", "size": 1, "etag": "b", "modified": "2026-03-03T00:00:00Z"},
        {"key": "in/day-2/a.jsonl", "size": 1, "etag": "c", "modified": "2026-03-02T00:00:00Z"},
        {"key": "in/", "size": 0, "etag": "d", "modified": "2026-03-04T00:00:00Z"},  # folder marker
    ]
    result = datawatch.summarise("s3://b/in/", objects)
    assert [e["uri"] for e in result["entries"]] == ["s3://b/in/day-1/", "s3://b/in/day-2/"]
    assert result["objects"] == 4 and len(result["version"]) == 16
