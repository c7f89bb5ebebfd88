"""An adapter source's base: found from the run card or adapter_config.json, and named so that
the next job finds it; a spec that contradicts the adapter's shape is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kubetune_trainer import adapter
from kubetune_trainer.adapter import BaseRef
from kubetune_trainer.errors import BadInputError

pytestmark = pytest.mark.unit


def write(folder: Path, name: str, body: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(body))


@pytest.mark.parametrize(
    ("base", "name"),
    [
        (BaseRef("hf://org/llama@main", "abc123"), "org/llama"),
        (BaseRef("file:///models/llama", None), "/models/llama"),
        (BaseRef("s3://models/llama-3.1-8b", None), "s3://models/llama-3.1-8b"),
    ],
)
def test_the_base_name_written_is_read_back_as_the_same_source(base: BaseRef, name: str) -> None:
    assert adapter.name_for(base) == name
    assert adapter.source_for(name) == base.source.split("@")[0]


def test_the_run_card_names_the_base_first(tmp_path: Path) -> None:
    write(tmp_path, "adapter_config.json", {"base_model_name_or_path": "/tmp/cache/model"})
    write(tmp_path, "kubetune_run.json",
          {"model": {"source": "s3://b/adapter", "base": {"source": "hf://org/m", "revision": "c0ffee"}}})  # fmt: skip
    assert adapter.base_of(tmp_path) == BaseRef("hf://org/m", "c0ffee")


def test_an_older_run_card_names_its_source_and_commit(tmp_path: Path) -> None:
    write(tmp_path, "kubetune_run.json", {"model": {"source": "hf://org/m", "commit": "c0ffee"}})
    assert adapter.base_of(tmp_path) == BaseRef("hf://org/m", "c0ffee")


def test_an_adapter_from_another_tool_names_its_hub_base(tmp_path: Path) -> None:
    write(tmp_path, "adapter_config.json",
          {"base_model_name_or_path": "meta-llama/Llama-3.1-8B", "revision": None})  # fmt: skip
    assert adapter.is_adapter(tmp_path)
    assert adapter.base_of(tmp_path) == BaseRef("hf://meta-llama/Llama-3.1-8B", None)


def test_an_adapter_without_a_base_is_bad_input(tmp_path: Path) -> None:
    write(tmp_path, "adapter_config.json", {"r": 8})
    with pytest.raises(BadInputError, match="names no base model"):
        adapter.base_of(tmp_path)


def test_a_merged_output_is_a_model_not_an_adapter(tmp_path: Path) -> None:
    write(tmp_path, "adapter_config.json", {"r": 8})
    write(tmp_path, "config.json", {"model_type": "llama"})
    assert not adapter.is_adapter(tmp_path)


ADAPTER = {"r": 8, "lora_alpha": 16, "use_dora": False,
           "target_modules": ["model.layers.0.self_attn.q_proj", "model.layers.0.mlp.up_proj"]}  # fmt: skip


@pytest.mark.parametrize(
    ("spec_lora", "problems"),
    [
        ({}, []),
        ({"dropout": 0.1}, []),
        ({"r": 8, "alpha": 16, "targetModules": ["all-linear"]}, []),
        ({"targetModules": ["q_proj", "up_proj"]}, []),
        ({"r": 16}, ["spec.method.lora.r is 16 but the adapter has 8"]),
        ({"useDora": True}, ["spec.method.lora.useDora is True but the adapter has False"]),
        ({"targetModules": ["k_proj"]}, ["spec.method.lora.targetModules is ['k_proj']"]),
    ],
)
def test_spec_settings_that_contradict_the_adapter_are_named(
    spec_lora: dict, problems: list[str]
) -> None:
    found = adapter.shape_conflicts(ADAPTER, spec_lora)
    assert len(found) == len(problems)
    for got, want in zip(found, problems, strict=True):
        assert got.startswith(want)
