"""Session fixtures for trainer tests: one tiny pre-trained base model and the task data."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubetune_trainer import tiny

from .harness import make_data


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama pre-trained on task A, with its tokenizer (built once per session)."""
    return tiny.make_tiny_model(tmp_path_factory.mktemp("tiny-base"), pretrain_steps=150)


@pytest.fixture(scope="session")
def task_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Task-B train and validation JSONL files."""
    return make_data(tmp_path_factory.mktemp("task-b"))
