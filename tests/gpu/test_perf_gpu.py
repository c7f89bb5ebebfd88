"""The throughput levers on CUDA keep the loss: packed + varlen + Liger equals padded sdpa."""

from __future__ import annotations

import copy
from typing import Any

import pytest


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not _cuda(), reason="needs a CUDA GPU")]

LENGTHS = [37, 100, 5, 64, 20, 131]


def tiny_llama() -> Any:
    """A small seeded Llama with grouped-query attention, bf16 on the GPU."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=512, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
    )  # fmt: skip
    torch.manual_seed(0)
    model: Any = LlamaForCausalLM._from_config(config, attn_implementation="sdpa")
    return model.to(device="cuda", dtype=torch.bfloat16).train()


def records() -> list[list[int]]:
    import torch

    g = torch.Generator().manual_seed(3)
    return [torch.randint(3, 512, (n,), generator=g).tolist() for n in LENGTHS]


def loss_and_grad(model: Any, batch: dict[str, Any]) -> tuple[float, Any]:
    """Loss and the gradient of the first layer's q projection for one batch."""
    model.zero_grad()
    moved = {k: v.to("cuda") if hasattr(v, "to") else v for k, v in batch.items()}
    loss = model(**moved).loss
    loss.backward()
    grad = model.model.layers[0].self_attn.q_proj.weight.grad.float().clone()
    return float(loss), grad


def test_packed_varlen_liger_matches_padded_sdpa() -> None:
    """Same records: padded through sdpa vs packed through varlen attention with Liger kernels."""
    import torch

    from kubetune_trainer import data, perf
    from kubetune_trainer.config import PerfConfig

    docs = records()
    width = max(LENGTHS)
    padded = {
        "input_ids": torch.tensor([d + [0] * (width - len(d)) for d in docs]),
        "attention_mask": torch.tensor([[1] * len(d) + [0] * (width - len(d)) for d in docs]),
        "labels": torch.tensor([d + [-100] * (width - len(d)) for d in docs]),
    }
    rows = data.pack([data.Example(d, list(d)) for d in docs], sum(LENGTHS) + 7, pad_id=0)
    packed = perf.varlen_inputs(data.collate(rows))

    base = tiny_llama()
    ours = copy.deepcopy(base)
    loss_b, grad_b = loss_and_grad(base, padded)  # before Liger patches transformers' rope function
    levers = perf.resolve(PerfConfig(), cuda=True, gradient_checkpointing=False)
    assert levers.varlen_attention, "torch.nn.attention.varlen is missing"
    applied = perf.apply(ours, levers)
    assert applied["varlen_attention"]
    loss_o, grad_o = loss_and_grad(ours, packed)
    assert abs(loss_o - loss_b) / loss_b < 1e-2, (loss_o, loss_b, applied)
    rel = float((grad_o - grad_b).norm() / grad_b.norm())
    assert rel < 5e-2, rel


def test_selective_checkpointing_keeps_loss() -> None:
    """Checkpointing every other layer recomputes activations without changing loss or gradients."""
    import torch

    from kubetune_trainer import perf

    g = torch.Generator().manual_seed(4)
    ids = torch.randint(3, 512, (2, 96), generator=g)
    batch = {"input_ids": ids, "labels": ids.clone()}
    base = tiny_llama()
    ours = copy.deepcopy(base)
    assert perf.checkpoint_layers(ours, 2) == 1
    loss_b, grad_b = loss_and_grad(base, batch)
    loss_o, grad_o = loss_and_grad(ours, batch)
    assert abs(loss_o - loss_b) < 1e-6 * max(1.0, abs(loss_b)) + 1e-3
    assert float((grad_o - grad_b).norm() / grad_b.norm()) < 1e-2


def test_compiled_layers_with_every_lever_match_eager() -> None:
    """perf.compile_layers on top of Liger and varlen attention: same loss and gradients."""

    from kubetune_trainer import data, perf
    from kubetune_trainer.config import PerfConfig

    docs = records()
    rows = data.pack([data.Example(d, list(d)) for d in docs], sum(LENGTHS) + 7, pad_id=0)
    packed = perf.varlen_inputs(data.collate(rows))
    eager = tiny_llama()
    levers = perf.resolve(PerfConfig(compile_layers=True), cuda=True, gradient_checkpointing=False)
    perf.apply(eager, levers)
    compiled = copy.deepcopy(eager)
    assert perf.compile_layers(compiled, levers, zero_stage=2) == 2
    loss_e, grad_e = loss_and_grad(eager, packed)
    loss_c, grad_c = loss_and_grad(compiled, packed)
    assert abs(loss_c - loss_e) / loss_e < 1e-2, (loss_c, loss_e)
    assert float((grad_c - grad_e).norm() / grad_e.norm()) < 5e-2
