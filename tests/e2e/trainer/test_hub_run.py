"""A run whose model and data are hf:// repos on a local Hub server records their commits."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.hub import HubServer, Repo, folder_files

from .harness import config, launch

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_hub_model_and_data_train_and_card_records_commits(
    tmp_path: Path, tiny_base: Path, task_data: tuple[Path, Path]
) -> None:
    model = Repo(folder_files(tiny_base))
    dataset = Repo({"data/train.jsonl": task_data[0].read_bytes(),
                    "data/validation.jsonl": task_data[1].read_bytes()})  # fmt: skip
    with HubServer({("model", "org/tiny"): model, ("dataset", "org/task-b"): dataset}) as hub:
        cfg = config(
            tmp_path / "run", tiny_base, task_data,
            model={"source": "hf://org/tiny", "revision": "main"},
            training={"max_steps": 4, "eval_every_steps": 4},
        )  # fmt: skip
        cfg["data"].update(train="hf://org/task-b", validation="hf://datasets/org/task-b@main")
        env = {"HF_ENDPOINT": hub.endpoint, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0"}
        run = launch(tmp_path / "run", cfg, env)
    assert run.code == 0, run.log[-3000:]
    card = run.card()
    assert card["model"]["commit"] == model.commit
    assert {s["commit"] for s in card["data"]["sources"]} == {dataset.commit}
    assert [s["records"] for s in card["data"]["sources"]] == [512, 64]
