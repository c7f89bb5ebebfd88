"""The build order of a training engine: one function, used by the trainer and the GPU benchmark.

The order matters and is easy to get subtly wrong in a copy: the DeepSpeed config comes first
(ZeRO-3 needs it while the weights load), the model-side throughput levers go on the plain
causal LM, then the method (LoRA wraps the patched modules), then activation checkpointing and
compilation of the wrapped layers, then the engine, then what ZeRO-3 needs after it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import engine as engine_mod
from . import model as model_mod
from . import perf
from .config import TrainerConfig


@dataclass(frozen=True)
class Built:
    """A training engine and how it was built."""

    engine: Any
    levers: perf.Levers
    ds_config: dict[str, Any]
    applied: dict[str, bool]
    """Which model-side levers took effect (liger, varlen_attention, compile_layers)."""


def build_engine(
    cfg: TrainerConfig,
    world_size: int,
    precision: str,
    cuda: bool,
    load_model: Callable[[dict[str, Any]], Any],
    total_steps: int,
    adapter_dir: str | None = None,
) -> Built:
    """levers -> DeepSpeed config -> load_model(config) -> levers on the model -> method (an
    adapter source in `adapter_dir` continued or merged) -> activation checkpointing ->
    compiled layers -> engine -> after-engine fix-ups."""
    zero = cfg.deepspeed.zero_stage
    levers = perf.resolve(cfg.perf, cuda, cfg.training.gradient_checkpointing)
    conf = engine_mod.ds_config(cfg, world_size, precision, perf.ds_settings(levers, zero))
    model = load_model(conf)
    applied = perf.apply(model, levers)
    model = model_mod.apply_method(
        model, cfg.method, cfg.training.seed, levers.checkpoint_every > 0, adapter_dir
    )
    if levers.checkpoint_every > 1:  # selective; full checkpointing is apply_method's
        perf.checkpoint_layers(model, levers.checkpoint_every)
    applied["compile_layers"] = perf.compile_layers(model, levers, zero) > 0
    engine = engine_mod.initialize(model, cfg, conf, total_steps)
    perf.after_engine(engine, levers, zero)
    return Built(engine, levers, conf, applied)
