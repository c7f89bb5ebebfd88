"""Throughput levers: fused kernels, packed-sequence attention, optimizer and ZeRO settings.

Each lever is chosen by a PerfConfig setting ("auto" picks what measured fastest), switches itself
off where it cannot run (no CUDA, library missing, model type unsupported), and leaves the loss
unchanged: the same batches give the same loss with or without it, up to rounding.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import logging
from dataclasses import dataclass
from typing import Any

from .config import PerfConfig
from .errors import BadInputError

log = logging.getLogger("kubetune_trainer")

VARLEN_ATTENTION = "kubetune_varlen"


@dataclass(frozen=True)
class Levers:
    """Which levers are on for this run (resolved from PerfConfig and what the machine has)."""

    liger: bool
    varlen_attention: bool
    fused_optimizer: bool
    checkpoint_every: int  # 0: no activation checkpointing; 1: every layer; k: every k-th layer
    compile_layers: bool = False


SPEC_FIELDS = {
    "liger_kernels": "spec.training.performance.ligerKernels",
    "varlen_attention": "spec.training.performance.varlenAttention",
}
NEEDS = {
    "liger_kernels": "a CUDA GPU and the liger-kernel package",
    "varlen_attention": "a CUDA GPU and torch's flash-attention varlen kernel (torch >= 2.10)",
}


def resolve_switch(setting: str, available: bool, field: str) -> bool:
    """auto -> available; on -> required (an error if unavailable); off -> never.

    The error names the FineTuneJob field users set, and the trainer-config field it became.
    """
    if setting == "on" and not available:
        raise BadInputError(
            f"{SPEC_FIELDS[field]} (trainer config perf.{field}) is on, but it cannot run here: "
            f"it needs {NEEDS[field]}; set it to auto to use it only where it can run"
        )
    return setting == "on" or (setting == "auto" and available)


def liger_available(cuda: bool) -> bool:
    """Liger's Triton kernels need CUDA and the liger-kernel package."""
    return cuda and importlib.util.find_spec("liger_kernel") is not None


def varlen_available(cuda: bool) -> bool:
    """torch's flash-attention varlen entry point (torch >= 2.10) on a CUDA device, checked once."""
    if not cuda:
        return False
    try:
        from torch.nn.attention.varlen import varlen_attn  # noqa: F401
    except ImportError:
        return False
    return varlen_selfcheck()


@functools.cache
def varlen_selfcheck() -> bool:
    """Run the varlen kernel forward and backward on two short documents against per-document sdpa.

    The entry point is young and its signature moved between torch releases; where it fails or
    disagrees, "auto" falls back to sdpa with transformers' packed-sequence mask.
    """
    import torch
    import torch.nn.functional as F

    try:
        g = torch.Generator(device="cuda").manual_seed(0)
        q, k, v = (
            torch.randn(
                48, 4, 64, device="cuda", dtype=torch.bfloat16, generator=g
            ).requires_grad_()
            for _ in range(3)
        )
        bounds = torch.tensor([0, 20, 48], device="cuda", dtype=torch.int32)
        out = _call_varlen(q, k, v, bounds, 28, 64**-0.5)
        out.float().sum().backward()
        ref = torch.cat(
            [
                F.scaled_dot_product_attention(
                    q[a:b].transpose(0, 1),
                    k[a:b].transpose(0, 1),
                    v[a:b].transpose(0, 1),
                    is_causal=True,
                ).transpose(0, 1)
                for a, b in ((0, 20), (20, 48))
            ]
        )
        err = float((out.float() - ref.float()).norm() / ref.float().norm())
        ok = err < 2e-2 and q.grad is not None and bool(torch.isfinite(q.grad).all())
    except Exception as e:  # any failure means: do not use it
        log.warning("varlen attention unavailable: %s", e)
        return False
    if not ok:
        log.warning("varlen attention disagrees with sdpa (relative error %.3g); not used", err)
    return ok


def checkpoint_interval(mode: str) -> int:
    """Layers per checkpointed layer: off 0, full 1, selective 2 (every other layer)."""
    return {"off": 0, "full": 1, "selective": 2}[mode]


def resolve(perf: PerfConfig, cuda: bool, gradient_checkpointing: bool) -> Levers:
    """The levers for this run; training.gradient_checkpointing=true means full unless perf says."""
    mode = perf.activation_checkpointing
    if mode == "auto":
        mode = "full" if gradient_checkpointing else "off"
    return Levers(
        liger=resolve_switch(perf.liger_kernels, liger_available(cuda), "liger_kernels"),
        varlen_attention=resolve_switch(
            perf.varlen_attention, varlen_available(cuda), "varlen_attention"
        ),
        fused_optimizer=perf.fused_optimizer and cuda,
        checkpoint_every=checkpoint_interval(mode),
        compile_layers=perf.compile_layers,
    )


# -- model ---------------------------------------------------------------------------------------
def apply_liger(model: Any) -> bool:
    """Swap in Liger's RMSNorm, RoPE, SwiGLU and fused linear cross-entropy; False if unsupported.

    Call on the plain causal LM before LoRA wraps it. The fused loss never builds the logits
    tensor, which frees most of the activation memory of large-vocabulary models.
    """
    from liger_kernel.transformers.monkey_patch import (
        MODEL_TYPE_TO_APPLY_LIGER_FN,
        _apply_liger_kernel_to_instance,
    )

    if getattr(model.config, "model_type", None) not in MODEL_TYPE_TO_APPLY_LIGER_FN:
        return False
    _apply_liger_kernel_to_instance(
        model=model,
        rope=True,
        rms_norm=True,
        swiglu=True,
        cross_entropy=False,
        fused_linear_cross_entropy=True,
    )
    return True


def use_varlen_attention(model: Any) -> None:
    """Route the model's attention through the packed-sequence (varlen) kernel."""
    register_varlen_attention()
    try:
        model.set_attn_implementation(VARLEN_ATTENTION)
    except (AttributeError, ValueError):
        model.config._attn_implementation = VARLEN_ATTENTION


def checkpoint_layers(model: Any, every: int) -> int:
    """Activation checkpointing on every `every`-th decoder layer (0: off); returns layers checkpointed.

    Selective checkpointing trades part of the recompute for part of the memory: with every=2
    half the layers keep their activations and run at full speed.
    """
    if every <= 0:
        return 0
    model.config.use_cache = False
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    layers = [m for m in model.modules() if hasattr(m, "gradient_checkpointing")]
    blocks = [m for m in decoder_layers(model) if hasattr(m, "gradient_checkpointing")] or layers
    for i, layer in enumerate(blocks):
        layer.gradient_checkpointing = i % every == 0
    return sum(1 for layer in blocks if layer.gradient_checkpointing)


def decoder_layers(model: Any) -> list[Any]:
    """The model's transformer blocks (LlamaDecoderLayer and the like), in order."""
    return [m for m in model.modules() if type(m).__name__.endswith("DecoderLayer")]


def compile_layers(model: Any, levers: Levers, zero_stage: int) -> int:
    """torch.compile each decoder layer in place (regional compilation); returns how many.

    The layers share one code object, so one compilation serves them all (seconds, not the
    minutes of compiling the whole model), and the loss, the optimizer and DeepSpeed's hooks
    around the layers stay eager. ZeRO-3 gathers parameters in hooks inside the layers, which
    compiled code does not run the same way, so it is left eager there. Call after LoRA and
    activation checkpointing are applied, before the engine is built.
    """
    if not levers.compile_layers:
        return 0
    if zero_stage == 3:
        log.warning("perf.compile_layers is not applied under ZeRO-3; the layers stay eager")
        return 0
    layers = decoder_layers(model)
    for layer in layers:
        layer.compile()
    return len(layers)


def apply(model: Any, levers: Levers) -> dict[str, bool]:
    """Apply the model-side levers to a freshly loaded causal LM; returns what took effect."""
    done = {"liger": False, "varlen_attention": False}
    if levers.liger:
        done["liger"] = apply_liger(model)
    if levers.varlen_attention:
        use_varlen_attention(model)
        done["varlen_attention"] = True
    return done


def after_engine(engine: Any, levers: Levers, zero_stage: int) -> None:
    """ZeRO-3 gathers weights per module call; the fused loss reads lm_head.weight directly."""
    if not (levers.liger and zero_stage == 3):
        return
    import deepspeed

    module = engine.module
    base = module.get_base_model() if hasattr(module, "get_base_model") else module
    head = getattr(base, "lm_head", None)
    if head is not None:
        deepspeed.zero.register_external_parameter(base, head.weight)


# -- DeepSpeed -----------------------------------------------------------------------------------
def ds_settings(levers: Levers, zero_stage: int) -> dict[str, Any]:
    """DeepSpeed config entries for the levers (merged under the user's deepspeed.overrides).

    ZeRO-3 gets larger prefetch and persistence thresholds than DeepSpeed's defaults, so small
    parameters stay resident and the next layer's weights arrive while this one computes; ZeRO-1/2
    keep DeepSpeed's defaults (contiguous gradients, 5e8-element buckets).
    """
    conf: dict[str, Any] = {}
    if levers.fused_optimizer:
        conf["optimizer"] = {"params": {"fused": True}}
    if zero_stage == 3:
        conf["zero_optimization"] = {
            "overlap_comm": True,
            "contiguous_gradients": True,
            "reduce_bucket_size": 200_000_000,
            "stage3_prefetch_bucket_size": 200_000_000,
            "stage3_param_persistence_threshold": 1_000_000,
            "stage3_max_live_parameters": 1_000_000_000,
        }
    return conf


# -- packed batches ------------------------------------------------------------------------------
def cu_seqlens(position_ids: Any) -> tuple[Any, int]:
    """Cumulative document boundaries over the flattened batch, and the longest document.

    Computed on the host copy of the batch, before it moves to the GPU, so the step does not wait.
    """
    import torch

    rows, width = position_ids.shape if position_ids.dim() == 2 else (1, position_ids.numel())
    flat = position_ids.reshape(-1)
    row_start = torch.arange(rows * width) % width == 0  # a row may begin inside a document
    starts = torch.nonzero((flat == 0) | row_start).reshape(-1)
    bounds = torch.cat([starts, torch.tensor([flat.numel()])]).to(torch.int32)
    longest = int((bounds[1:] - bounds[:-1]).max()) if bounds.numel() > 1 else int(flat.numel())
    return bounds, longest


def varlen_inputs(batch: dict[str, Any]) -> dict[str, Any]:
    """The batch plus the document boundaries the varlen kernel reads (needs position_ids)."""
    if "position_ids" not in batch:
        return batch
    bounds, longest = cu_seqlens(batch["position_ids"])
    return {
        **batch,
        "cu_seq_lens_q": bounds,
        "cu_seq_lens_k": bounds,
        "max_length_q": longest,
        "max_length_k": longest,
    }


# -- the attention function ----------------------------------------------------------------------
@functools.cache
def _varlen_params() -> frozenset[str]:
    from torch.nn.attention.varlen import varlen_attn

    return frozenset(inspect.signature(varlen_attn).parameters)


def _call_varlen(q: Any, k: Any, v: Any, bounds: Any, longest: int, scale: float | None) -> Any:
    """Causal varlen attention over (tokens, heads, dim) tensors, as this torch release spells it.

    torch 2.10 takes is_causal and no scale; later releases take window_size, scale, enable_gqa.
    Grouped-query key/value heads are repeated where the kernel cannot share them.
    """
    from torch.nn.attention.varlen import varlen_attn

    params = _varlen_params()
    extra: dict[str, Any] = (
        {"window_size": (-1, 0)} if "window_size" in params else {"is_causal": True}
    )
    if scale is not None and "scale" in params:
        extra["scale"] = scale
    if k.shape[1] != q.shape[1]:
        if "enable_gqa" in params:
            extra["enable_gqa"] = True
        else:
            k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
            v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    return varlen_attn(q, k, v, bounds, bounds, longest, longest, **extra)


def _default_scale(scaling: float | None, head_dim: int) -> bool:
    return scaling is None or abs(scaling - head_dim**-0.5) < 1e-9


def varlen_attention_forward(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    scaling: float | None = None,
    dropout: float = 0.0,
    cu_seq_lens_q: Any = None,
    max_length_q: int | None = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    """Causal attention within each packed document; plain causal sdpa when no boundaries are given.

    query: (batch, heads, seq, dim); key/value: (batch, kv_heads, seq, dim). Returns
    (batch, seq, heads, dim) as transformers' attention functions do.
    """
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if cu_seq_lens_q is None and kwargs.get("position_ids") is not None:
        cu_seq_lens_q, max_length_q = cu_seqlens(kwargs["position_ids"].detach().cpu())
    unsupported = "scale" not in _varlen_params() and not _default_scale(scaling, query.shape[-1])
    if cu_seq_lens_q is None or attention_mask is not None or dropout or unsupported:
        kwargs.pop("cu_seq_lens_k", None)
        kwargs.pop("max_length_k", None)
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    b, h, s, d = query.shape
    kv_heads = key.shape[1]
    q = query.transpose(1, 2).reshape(b * s, h, d)
    k = key.transpose(1, 2).reshape(b * s, kv_heads, d)
    v = value.transpose(1, 2).reshape(b * s, kv_heads, d)
    bounds = cu_seq_lens_q.to(device=q.device, dtype=torch.int32, non_blocking=True)
    longest = int(max_length_q) if max_length_q is not None else s
    out = _call_varlen(q, k, v, bounds, longest, scaling)
    return out.reshape(b, s, h, d), None


def varlen_mask(attention_mask: Any = None, **kwargs: Any) -> Any:
    """No mask for packed rows (the kernel reads document boundaries); sdpa's mask for padded ones.

    transformers calls mask functions with keyword arguments only.
    """
    if attention_mask is None:
        return None
    from transformers.masking_utils import sdpa_mask

    return sdpa_mask(attention_mask=attention_mask, **kwargs)


def register_varlen_attention() -> None:
    """Make VARLEN_ATTENTION a valid attn_implementation for every transformers model."""
    from transformers.masking_utils import AttentionMaskInterface
    from transformers.modeling_utils import AttentionInterface

    AttentionInterface.register(VARLEN_ATTENTION, varlen_attention_forward)
    AttentionMaskInterface.register(VARLEN_ATTENTION, varlen_mask)
