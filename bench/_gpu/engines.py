"""The two engines compared: a plain DeepSpeed loop (baseline) and the trainer's build (ours)."""

from __future__ import annotations

import gc
from dataclasses import asdict
from typing import Any

from bench._gpu.tasks import LORA, SHAPES, Task


def new_model(shape: str, dtype: Any, device: Any) -> Any:
    """A random-init Llama of the shape, seeded, built directly on the device with sdpa attention."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**SHAPES[shape], use_cache=False)
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM._from_config(config, dtype=dtype, attn_implementation="sdpa")
    model.config.use_cache = False
    return model


def count_params(module: Any) -> tuple[int, int]:
    """(all parameters, trainable parameters), counting ZeRO-3 partitions at full size."""
    total = trainable = 0
    for p in module.parameters():
        n = int(getattr(p, "ds_numel", 0) or p.numel())
        total += n
        trainable += n if p.requires_grad else 0
    return total, trainable


def baseline_engine(
    task: Task, precision: str, cuda: bool, lr: float
) -> tuple[Any, dict[str, Any]]:
    """The plain loop: HF Llama (sdpa) + peft LoRA if asked, deepspeed.initialize, torch fused AdamW."""
    import deepspeed
    import torch

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    model = new_model(task.shape, dtype, "cuda" if cuda else "cpu")
    if task.method == "lora":
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(0)
        model = get_peft_model(
            model,
            LoraConfig(
                r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=0.0,
                target_modules="all-linear", task_type="CAUSAL_LM",
            ),
        )  # fmt: skip
    params = {"lr": lr, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0, "torch_adam": True}
    if cuda:
        params["fused"] = True
    conf = {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": 1.0,
        "zero_optimization": {"stage": task.zero},
        "optimizer": {"type": "AdamW", "params": params},
        "bf16": {"enabled": precision == "bf16"},
        "steps_per_print": 10**9,
    }
    trainable = [p for p in model.parameters() if p.requires_grad]
    engine, *_ = deepspeed.initialize(model=model, model_parameters=trainable, config=conf)
    return engine, {"attention": "sdpa", "packing": False}


def trainer_config(task: Task, precision: str, lr: float) -> Any:
    """The TrainerConfig the operator would render for this task (paths unused here)."""
    from kubetune_trainer.config import TrainerConfig

    return TrainerConfig.model_validate(
        {
            "job": {"name": "bench"},
            "model": {"source": "file:///unused", "dtype": "bfloat16"},
            "data": {"train": "file:///unused", "max_seq_length": task.seq},
            "method": {"type": task.method, "lora_r": LORA["r"], "lora_alpha": LORA["alpha"], "lora_dropout": 0.0},
            "training": {"learning_rate": lr, "scheduler": "constant", "warmup_ratio": 0.0,
                         "micro_batch_size": 1, "global_batch_size": 1, "precision": precision, "seed": 0},
            "deepspeed": {"zero_stage": task.zero},
            "perf": dict(task.perf),
        }
    )  # fmt: skip


def ours_engine(task: Task, precision: str, cuda: bool, lr: float) -> tuple[Any, dict[str, Any]]:
    """The trainer's own build order (build.build_engine) on a fresh random model of the shape."""
    import torch

    from kubetune_trainer.build import build_engine

    cfg = trainer_config(task, precision, lr)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    device = "cuda" if cuda else "cpu"
    built = build_engine(
        cfg, 1, precision, cuda, lambda _: new_model(task.shape, dtype, device), total_steps=10**6
    )
    return built.engine, {
        **asdict(built.levers),
        **{f"applied_{k}": v for k, v in built.applied.items()},
        "packing": True,
    }


def release(engine: Any) -> None:
    """Drop an engine's hooks and buffers; the caller then drops its reference and collects."""
    destroy = getattr(engine, "destroy", None)
    if callable(destroy):
        try:
            destroy()
        except Exception as e:  # a failed cleanup must not hide the measurements already taken
            print(f"engine.destroy failed: {e}", flush=True)


def collect() -> None:
    """Free what released engines left (DeepSpeed engines hold reference cycles)."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
