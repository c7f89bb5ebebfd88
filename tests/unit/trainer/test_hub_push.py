"""output.push: the export folder as one commit to a Hub repository (the local Hub server's
upload endpoints), read back with the real huggingface_hub client; a refused token is bad input
naming the field."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kubetune_trainer.config import PushConfig
from kubetune_trainer.contract import HUB_PUSH_TOKEN_ENV
from kubetune_trainer.errors import BadInputError
from kubetune_trainer.model_card import render
from kubetune_trainer.tracking.hub_push import push
from tests.fixtures.hub import HubServer

pytestmark = pytest.mark.unit
TOKEN = "hf_write_token"


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    with HubServer(write_token=TOKEN) as server:
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        yield server


def export_folder(tmp: Path) -> Path:
    folder = tmp / "export"
    (folder / "adapter").mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(bytes(range(256)) * 40)
    (folder / "adapter" / "adapter_config.json").write_text('{"r": 8}')
    card = {"job": {"name": "j"}, "model": {"source": "hf://org/base@main"},
            "method": {"type": "lora"}, "output": {"format": "both"}}  # fmt: skip
    (folder / "README.md").write_text(render(card))
    return folder


def test_push_commits_the_folder_and_the_hub_client_downloads_it(
    hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import snapshot_download

    folder = export_folder(tmp_path)
    monkeypatch.setenv(HUB_PUSH_TOKEN_ENV, TOKEN)
    pushed = push(folder, PushConfig(repo="org/tuned", endpoint=hub.endpoint), "kubetune: j")
    assert pushed == {"repo": "org/tuned", "commit": hub.repos[("model", "org/tuned")].commit}
    got = Path(snapshot_download("org/tuned", revision=pushed["commit"], endpoint=hub.endpoint))
    for name in ("model.safetensors", "adapter/adapter_config.json", "README.md"):
        assert (got / name).read_bytes() == (folder / name).read_bytes()
    assert "base_model: org/base" in (got / "README.md").read_text()
    again = push(folder, PushConfig(repo="org/tuned", endpoint=hub.endpoint), "again")  # exists
    assert again["commit"] == pushed["commit"]  # same files, same content address here


def test_push_without_a_write_token_is_bad_input_naming_the_field(
    hub: HubServer, tmp_path: Path
) -> None:
    with pytest.raises(BadInputError, match=r"spec\.output\.push.*401"):
        push(export_folder(tmp_path), PushConfig(repo="org/tuned", endpoint=hub.endpoint), "j")
