"""Checkpoint uploads outlast an object-store outage: each publish step is retried with backoff
until its time limit, then the error is raised as before."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubetune_trainer.checkpoint.manager import claim, upload_rank, with_retries
from kubetune_trainer.checkpoint.seal import Seal
from kubetune_trainer.errors import BadInputError
from kubetune_trainer.storage import FileStorage

pytestmark = pytest.mark.unit


class Clock:
    """A fake monotonic clock that sleeping advances."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class Outage(FileStorage):
    """A store that refuses the first `failures` writes, like a server that is down."""

    def __init__(self, root: str, failures: int) -> None:
        super().__init__(root)
        self.failures = failures

    def put_file(self, local: Path, key: str) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("connection refused")
        super().put_file(local, key)


def test_retries_with_backoff_until_it_works(tmp_path: Path) -> None:
    clock = Clock()
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "shard.pt").write_bytes(b"weights")
    store = Outage(str(tmp_path / "store"), failures=4)

    record = with_retries(
        lambda: upload_rank(store, folder, "step-00000010", 0, Seal(b"key", "team/job")),
        "upload",
        give_up_after=60,
        sleep=clock.sleep,
        clock=lambda: clock.now,
    )
    assert clock.slept == [1.0, 2.0, 4.0, 8.0]
    assert record["files"]["shard.pt"]["size"] == 7
    assert store.get_bytes("step-00000010/shard.pt") == b"weights"


def test_gives_up_after_the_time_limit() -> None:
    clock = Clock()
    calls = []

    def down() -> None:
        calls.append(clock.now)
        raise ConnectionError("connection refused")

    with pytest.raises(ConnectionError):
        with_retries(down, "upload", give_up_after=30, sleep=clock.sleep, clock=lambda: clock.now)
    assert clock.slept == [1.0, 2.0, 4.0, 8.0, 10.0]
    assert len(calls) == 6


@pytest.mark.parametrize(
    ("env", "tag", "expected"),
    [
        ({}, "step-00000010", 0.0),
        ({"KUBETUNE_FAULT_UPLOAD_PAUSE": "1:10:30"}, "step-00000010", 30.0),
        ({"KUBETUNE_FAULT_UPLOAD_PAUSE": "1:10:30"}, "step-00000005", 0.0),
        ({"KUBETUNE_FAULT_UPLOAD_PAUSE": "1:10:30", "KUBETUNE_ATTEMPT": "2"}, "step-00000010", 0.0),
        ({"KUBETUNE_FAULT_UPLOAD_PAUSE": "1:*:40"}, "step-00000007", 40.0),
    ],
)
def test_upload_pause_fault_hook(env: dict[str, str], tag: str, expected: float) -> None:
    from kubetune_trainer.checkpoint.manager import injected_upload_pause

    assert injected_upload_pause(tag, env) == expected


class ListingOutage(FileStorage):
    """A store whose listings fail the first `failures` times (the server is down)."""

    def __init__(self, root: str, failures: int) -> None:
        super().__init__(root)
        self.failures = failures

    def list(self, prefix: str) -> dict[str, int]:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("connection refused")
        return super().list(prefix)


def test_claiming_a_checkpoint_folder_outlasts_an_outage(tmp_path: Path) -> None:
    """The claim runs in the training loop before each save: an outage there once ended the
    worker (the S3-down scenario); now it waits like the upload does."""
    clock = Clock()
    store = ListingOutage(str(tmp_path / "store"), failures=3)
    seal = Seal(b"key", "team/job")
    with_retries(
        lambda: claim(store, "step-00000010", seal, "s3://b/ckpt"),
        "claim",
        give_up_after=60,
        sleep=clock.sleep,
        clock=lambda: clock.now,
    )
    assert clock.slept == [1.0, 2.0, 4.0]
    claim(store, "step-00000010", seal, "s3://b/ckpt")  # this job's own: claimed again freely


def test_bad_input_is_not_retried(tmp_path: Path) -> None:
    clock = Clock()
    store = FileStorage(str(tmp_path / "store"))
    claim(store, "step-00000010", Seal(b"key", "team/other"), "s3://b/ckpt")
    with pytest.raises(BadInputError, match=r"spec\.checkpoint\.uri"):
        with_retries(
            lambda: claim(store, "step-00000010", Seal(b"key", "team/job"), "s3://b/ckpt"),
            "claim",
            give_up_after=60,
            sleep=clock.sleep,
            clock=lambda: clock.now,
        )
    assert clock.slept == []
