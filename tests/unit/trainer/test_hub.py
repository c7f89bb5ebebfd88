"""hf:// model and data sources, downloaded with huggingface_hub from a local Hub server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubetune_trainer import data, model
from kubetune_trainer.errors import BadInputError
from tests.fixtures.hub import HubServer, Repo

pytestmark = pytest.mark.unit

RECORDS = b"".join(
    json.dumps({"prompt": f"q{i}", "completion": f"a{i}"}).encode() + b"\n" for i in range(5)
)
MODEL = Repo({"config.json": b'{"model_type": "llama"}', "tokenizer.json": b"{}"}, ("main", "v1"))
DATASET = Repo(
    {
        "data/train.jsonl": RECORDS,
        "data/test.jsonl": b"".join(RECORDS.splitlines(keepends=True)[:2]),
        "README.md": b"x",
    }
)


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    """The server, with HF_ENDPOINT pointing at it and a fresh HF_HOME."""
    with HubServer({("model", "org/tiny"): MODEL, ("dataset", "org/chat"): DATASET}) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        yield server


def test_model_is_downloaded_at_a_resolved_commit(hub: HubServer, tmp_path: Path) -> None:
    location, commit = model.fetch_resolved("hf://org/tiny@v1", tmp_path)
    assert commit == MODEL.commit
    assert json.loads(Path(location, "config.json").read_text()) == {"model_type": "llama"}
    assert model.fetch_resolved("hf://org/tiny", tmp_path, revision="main")[1] == MODEL.commit


def test_dataset_repo_and_file_in_it(hub: HubServer, tmp_path: Path) -> None:
    records, sources = data.load_split("hf://org/chat", tmp_path, None)
    assert len(records) == 5
    assert len(data.load_split("hf://org/chat", tmp_path, None, "validation")[0]) == 2
    assert {s.commit for s in sources} == {DATASET.commit}
    records, _ = data.load_split("hf://datasets/org/chat@main/data/train.jsonl", tmp_path, None)
    assert len(records) == 5


def test_missing_repo_or_revision_names_the_field(hub: HubServer, tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match=r"model\.source.*'org/nope'.*not found"):
        model.fetch_resolved("hf://org/nope", tmp_path)
    with pytest.raises(BadInputError, match=r"model\.source.*revision 'v9' not found"):
        model.fetch_resolved("hf://org/tiny@v9", tmp_path)
    with pytest.raises(BadInputError, match=r"model\.revision.*disagrees"):
        model.fetch_resolved("hf://org/tiny@v1", tmp_path, revision="main")
    with pytest.raises(BadInputError, match=r"dataset.*'org/gone'.*not found"):
        data.load_split("hf://org/gone", tmp_path, None)
