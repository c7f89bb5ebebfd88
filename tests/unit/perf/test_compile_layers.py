"""Compiled decoder layers give the eager model's losses on the same packed batches."""

from __future__ import annotations

import copy

import pytest
import torch

from kubetune_trainer import data, perf
from kubetune_trainer.config import MethodConfig
from kubetune_trainer.model import apply_method
from kubetune_trainer.tiny import build_model


def packed_batch(seed: int) -> dict[str, torch.Tensor]:
    """Two rows of 48 tokens, each holding three records whose positions restart at 0."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 256, (2, 48), generator=g)
    labels = ids.clone()
    positions = torch.tensor([[p for n in (20, 16, 12) for p in range(n)]] * 2)
    labels[positions == 0] = data.IGNORE
    return {"input_ids": ids, "labels": labels, "position_ids": positions}


def losses(model: torch.nn.Module, steps: int) -> list[float]:
    """AdamW steps on one batch (so the loss must fall); the loss of each."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    out = []
    for _ in range(steps):
        loss = model(**packed_batch(0)).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        out.append(float(loss.detach()))
    return out


def levers(compile_layers: bool) -> perf.Levers:
    return perf.Levers(False, False, False, 0, compile_layers=compile_layers)


@pytest.mark.unit
@pytest.mark.slow
@pytest.mark.parametrize("method", ["full", "lora"])
def test_compiled_layers_match_eager_losses(method: str) -> None:
    torch.manual_seed(0)
    base = build_model(256, seed=0, hidden=64, layers=2)
    lora = {"lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.0} if method == "lora" else {}
    eager = apply_method(
        base, MethodConfig(type=method, **lora), seed=0, gradient_checkpointing=False
    )
    compiled = copy.deepcopy(eager)
    assert perf.compile_layers(compiled, levers(True), zero_stage=2) == 2

    torch._dynamo.reset()
    stats = torch._dynamo.utils.counters["stats"]
    graphs = stats["unique_graphs"]
    expected, got = losses(eager, 4), losses(compiled, 4)
    assert stats["unique_graphs"] > graphs  # the layers did compile
    assert got == pytest.approx(expected, rel=1e-5)
    assert expected[-1] < expected[0]  # the steps trained something


@pytest.mark.unit
def test_compile_is_off_by_default_and_under_zero3() -> None:
    model = build_model(256, seed=0, hidden=64, layers=2)
    assert perf.compile_layers(model, levers(False), zero_stage=2) == 0
    assert perf.compile_layers(model, levers(True), zero_stage=3) == 0
    assert all(getattr(m, "_compiled_call_impl", None) is None for m in perf.decoder_layers(model))
