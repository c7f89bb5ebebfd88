"""The DeepSpeed engine: its config derived from the TrainerConfig, the optimizer, the LR schedule."""

from __future__ import annotations

import copy
from typing import Any

from .config import TrainerConfig, TrainingConfig
from .errors import BadInputError


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """base with override merged in, recursively for nested dicts (override wins)."""
    out = copy.deepcopy(base)
    for k, v in override.items():
        out[k] = (
            deep_merge(out[k], v)
            if isinstance(v, dict) and isinstance(out.get(k), dict)
            else copy.deepcopy(v)
        )
    return out


def resolve_precision(requested: str, cuda: bool, bf16_supported: bool) -> str:
    """fp32/bf16/fp16 as the device allows: auto is bf16 on capable GPUs, fp16 on older ones, fp32 on CPU."""
    if requested == "auto":
        return ("bf16" if bf16_supported else "fp16") if cuda else "fp32"
    if requested == "fp16" and not cuda:
        raise BadInputError("training.precision=fp16 needs a GPU; use fp32 or bf16 on CPU")
    return requested


def offload_section(device: str, nvme_path: str | None, field: str) -> dict[str, Any]:
    """A ZeRO offload block for none/cpu/nvme."""
    if device == "nvme":
        if not nvme_path:
            raise BadInputError(f"deepspeed.{field}=nvme needs deepspeed.nvme_path")
        return {"device": "nvme", "nvme_path": nvme_path, "pin_memory": True}
    return {"device": device, "pin_memory": device == "cpu"}


def ds_config(
    cfg: TrainerConfig, world_size: int, precision: str, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The DeepSpeed JSON config for this run; extra (throughput levers), then overrides, merged in."""
    t, d = cfg.training, cfg.deepspeed
    if not 0 <= d.zero_stage <= 3:
        raise BadInputError(f"deepspeed.zero_stage must be 0-3, got {d.zero_stage}")
    if d.offload_parameters != "none" and d.zero_stage != 3:
        raise BadInputError("deepspeed.offload_parameters needs zero_stage 3")
    accumulation = accumulation_steps(t, world_size)
    zero: dict[str, Any] = {"stage": d.zero_stage}
    if d.offload_optimizer != "none":
        zero["offload_optimizer"] = offload_section(
            d.offload_optimizer, d.nvme_path, "offload_optimizer"
        )
    if d.offload_parameters != "none":
        zero["offload_param"] = offload_section(
            d.offload_parameters, d.nvme_path, "offload_parameters"
        )
    if d.zero_stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    adam: dict[str, Any] = {
        "lr": t.learning_rate,
        "betas": [0.9, 0.999],
        "eps": 1e-8,
        "weight_decay": t.weight_decay,
    }
    if d.offload_optimizer == "none":
        adam["torch_adam"] = True  # no op build needed; DeepSpeedCPUAdam is used with offload
    conf: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": t.micro_batch_size,
        "gradient_accumulation_steps": accumulation,
        "train_batch_size": t.micro_batch_size * accumulation * world_size,
        "gradient_clipping": t.max_grad_norm,
        "zero_optimization": zero,
        "optimizer": {"type": "AdamW", "params": adam},
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16"},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
        "seed": t.seed,
    }
    return deep_merge(deep_merge(conf, extra or {}), d.overrides)


def accumulation_steps(t: TrainingConfig, world_size: int) -> int:
    """The gradient accumulation the operator resolved, checked against the world this run has:
    global batch = micro-batch x accumulation x world size (the operator computed it for the
    gang it started; a config for another world size is bad input, not something to redo)."""
    steps = t.gradient_accumulation_steps
    if t.micro_batch_size * steps * world_size != t.global_batch_size:
        raise BadInputError(
            f"training.global_batch_size={t.global_batch_size} is not micro_batch_size x "
            f"gradient_accumulation_steps x world size ({t.micro_batch_size} x {steps} x "
            f"{world_size})"
        )
    return steps


def warmup_steps(total_steps: int, ratio: float) -> int:
    """Warmup steps from the ratio of total steps."""
    return round(total_steps * ratio)


def make_scheduler(name: str, total_steps: int, warmup: int) -> Any:
    """A factory DeepSpeed calls with its optimizer; the scheduler's state goes into checkpoints."""
    from transformers import get_scheduler

    def factory(optimizer: Any) -> Any:
        return get_scheduler(
            name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps
        )

    return factory


def initialize(model: Any, cfg: TrainerConfig, conf: dict[str, Any], total_steps: int) -> Any:
    """deepspeed.initialize over the trainable parameters; returns the engine."""
    import deepspeed

    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise BadInputError("method: no parameter is trainable")
    sched = make_scheduler(
        cfg.training.scheduler, total_steps, warmup_steps(total_steps, cfg.training.warmup_ratio)
    )
    engine, *_ = deepspeed.initialize(
        model=model, model_parameters=params, config=conf, lr_scheduler=sched
    )
    return engine


def local_param_share(engine: Any) -> tuple[int, int]:
    """(elements this rank holds, elements in the model): ZeRO-3 partitions, other stages replicate."""
    local = total = 0
    for p in engine.module.parameters():
        if hasattr(p, "ds_tensor"):
            local += p.ds_tensor.numel()
            total += p.ds_numel
        else:
            local += p.numel()
            total += p.numel()
    return local, total
