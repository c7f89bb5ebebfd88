"""Training throughput of the kubetune trainer against a plain DeepSpeed loop, on one GPU, in one run.

baseline: transformers' Llama with sdpa attention, wrapped by deepspeed.initialize, torch fused
AdamW, bf16, no packing (variable-length batches padded to their longest record, as HF's padding
collator does). ours: the trainer's own building blocks (method setup, DeepSpeed config
derivation, engine) with its throughput levers (kubetune_trainer.perf) at their defaults.
Micro-batch: the largest power of two that fits, for the baseline in the device's memory, for ours
in the baseline's peak memory. Models are random-init from Llama-3.2-1B / Llama-3.1-8B shapes.

    python bench/gpu_throughput.py --out DIR          # the GPU benchmark (~6 minutes on an H100)
    python bench/gpu_throughput.py --smoke --out DIR  # tiny shapes on CPU, to check the script
    python bench/gpu_throughput.py --out DIR --resume # only what DIR has no good result for yet

The configs short of their goal (PROFILED) also run a few steps under torch.profiler, and the
report says where their step time goes: kernel time by kind (matmul, attention, fused Triton,
elementwise, optimizer, copies) and how busy the GPU was, which tells the next lever to try.

Each (variant, group of configs) runs in its own process, baseline first, so that patched kernels
never leak into the baseline and ours can be held to the baseline's memory. Results are appended
to DIR/results.jsonl as they come and DIR/gpu_throughput.md is rewritten after every config.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kubetune_trainer import flops
from kubetune_trainer.flops import flops_per_token

PEAK_BF16_FLOPS = 989e12  # H100/H200 SXM dense bf16, the reference
LORA = {"r": 16, "alpha": 32}
SHAPES: dict[str, dict[str, Any]] = {
    "llama-3.2-1b": dict(
        vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
        num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=True,
        max_position_embeddings=131072, rms_norm_eps=1e-5,
    ),
    "llama-3.1-8b": dict(
        vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=False,
        max_position_embeddings=131072, rms_norm_eps=1e-5,
    ),
    "tiny": dict(
        vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
        max_position_embeddings=4096, rms_norm_eps=1e-5,
    ),
}  # fmt: skip


@dataclass(frozen=True)
class Task:
    """One measurement: a model shape, a method, a ZeRO stage and a kind of data."""

    name: str
    kind: str  # fixed | varlen | parity
    shape: str
    method: str  # full | lora
    zero: int
    seq: int
    micro_from: str | None = None  # varlen/parity: reuse the micro-batch of this fixed task
    compare_to: str | None = (
        None  # ours-only rows: the baseline row they are held to and compared with
    )
    perf: tuple[tuple[str, Any], ...] = ()  # ours-only rows: PerfConfig settings to try


@dataclass
class Plan:
    """Run-wide knobs (steps, budget, shapes) for the GPU run or the CPU smoke run."""

    smoke: bool
    warmup: int
    steps: int
    parity_steps: int
    parity_docs: int
    max_micro: int
    memory_fraction: float = 0.92
    lr: float = 1e-4
    profile_steps: int = 2  # profiled steps after the timed ones, for PROFILED configs (0: none)


@dataclass
class Result:
    """What one process measured for one task and variant."""

    task: str
    variant: str
    ok: bool
    micro_batch: int = 0
    tokens_per_s: float = 0.0
    real_tokens_per_s: float = 0.0
    mfu: float | None = None
    peak_alloc_gib: float = 0.0
    peak_reserved_gib: float = 0.0
    step_s: float = 0.0
    pad_fraction: float = 0.0
    losses: list[float] = field(default_factory=list)
    params: int = 0
    trainable: int = 0
    levers: dict[str, Any] = field(default_factory=dict)
    profile: dict[str, Any] = field(default_factory=dict)
    note: str = ""


COMPILED, NO_LIGER = (("compile_layers", True),), ("liger_kernels", "off")


def untried(
    shape: str, method: str, label: str, perf: tuple[tuple[str, Any], ...], seq: int
) -> list[Task]:
    """A group of one ours-only task: a lever tried on a ZeRO-2 goal config, held to its baseline."""
    base = f"1B {'full' if method == 'full' else 'LoRA'} ZeRO-2"
    return [Task(f"{base}, {label}, ours only", "fixed", shape, method, 2, seq, None, base, perf)]


def tasks_for(smoke: bool) -> list[list[Task]]:
    """Groups of tasks, most important first; each group runs as one baseline and one ours process."""
    if smoke:
        s = "tiny"
        return [
            [
                Task("1B full ZeRO-2", "fixed", s, "full", 2, 128),
                Task("parity", "parity", s, "full", 2, 128),
                Task("varlen 1B full ZeRO-2", "varlen", s, "full", 2, 128, "1B full ZeRO-2"),
                Task("1B full ZeRO-3", "fixed", s, "full", 3, 128),
                Task("1B LoRA ZeRO-2", "fixed", s, "lora", 2, 128),
            ],
            [Task("1B full ZeRO-0, ours only", "fixed", s, "full", 0, 128, None, "1B full ZeRO-2")],
            untried(s, "full", "compiled layers", COMPILED, 128),
        ]
    one, eight = "llama-3.2-1b", "llama-3.1-8b"
    return [
        [
            Task("1B full ZeRO-2", "fixed", one, "full", 2, 2048),
            Task("parity", "parity", one, "full", 2, 2048),
            Task("varlen 1B full ZeRO-2", "varlen", one, "full", 2, 2048, "1B full ZeRO-2"),
        ],
        [
            Task("1B LoRA ZeRO-2", "fixed", one, "lora", 2, 2048),
            Task("1B full ZeRO-3", "fixed", one, "full", 3, 2048),
        ],
        [Task("8B LoRA ZeRO-2", "fixed", eight, "lora", 2, 2048)],
        # Untried levers, each in its own process: a failed compilation can break the CUDA context.
        untried(one, "full", "compiled layers", COMPILED, 2048),
        untried(one, "lora", "compiled layers", COMPILED, 2048),
        untried(one, "full", "compiled layers without Liger", (*COMPILED, NO_LIGER), 2048),
        # Measured already (no faster than ZeRO-2 on one GPU): last, if time is left.
        [
            Task(
                "1B full ZeRO-0, ours only", "fixed", one, "full", 0, 2048, None, "1B full ZeRO-2"
            ),
            Task(
                "1B LoRA ZeRO-0, ours only", "fixed", one, "lora", 0, 2048, None, "1B LoRA ZeRO-2"
            ),
        ],
    ]


# Configs short of their goal: a few profiled steps say where their step time goes.
PROFILED = {"1B full ZeRO-2", "1B LoRA ZeRO-2", "8B LoRA ZeRO-2"}


def plan_for(smoke: bool) -> Plan:
    """Few steps: the GPU lease is short, and eight timed steps at these sizes vary by ~1%."""
    if smoke:
        return Plan(
            smoke=True, warmup=1, steps=2, parity_steps=3, parity_docs=4, max_micro=4,
            profile_steps=1,
        )  # fmt: skip
    return Plan(smoke=False, warmup=3, steps=8, parity_steps=50, parity_docs=8, max_micro=64)


# -- arithmetic -------------------------------------------------------------------------------------
def mfu(tokens_per_s: float, flops_token: float, peak: float = PEAK_BF16_FLOPS) -> float:
    """Model FLOPs utilisation on one H100/H200 (kubetune_trainer.flops holds the formula)."""
    return flops.mfu(tokens_per_s, flops_token, peak)


KERNEL_CATEGORIES = (  # first match wins (^: at the start); CUDA kernels or, on CPU, aten ops
    ("optimizer", ("adam", "multi_tensor", "foreach")),
    ("communication", ("nccl", "all_reduce", "allreduce", "reduce_scatter", "all_gather")),
    ("attention", ("flash", "fmha", "attention", "sdpa", "varlen")),
    ("matmul", ("gemm", "cutlass", "xmma", "nvjet", "cublas", "aten::mm", "aten::addmm", "aten::bmm", "matmul")),
    ("fused (triton)", ("triton", "liger", "element_mul_kernel", "^_")),  # Liger's kernels: _name
    ("memory copies", ("memcpy", "memset", "copy_", "aten::to", "cat")),
    ("elementwise", ("elementwise", "vectorized", "reduce", "unrolled", "aten::")),
)  # fmt: skip


def kernel_category(name: str) -> str:
    """Which kind of work a kernel (or, on CPU, an aten op) is, from its name."""
    low = name.lower()
    for category, marks in KERNEL_CATEGORIES:
        if any(low.startswith(m[1:]) if m[0] == "^" else m in low for m in marks):
            return category
    return "other"


def time_breakdown(
    kernels: list[tuple[str, float, int]], wall_s: float, steps: int, top: int = 8
) -> dict[str, Any]:
    """Per-step device time by category and the top kernels, from (name, seconds, calls) rows.

    busy is the summed kernel time over the wall time: well under 1 means the device waits on
    the host (launch overhead, synchronisation), which CUDA graphs or torch.compile address;
    near 1 means the kernels themselves must get faster or fewer.
    """
    busy = sum(sec for _, sec, _ in kernels)
    by_category: dict[str, float] = {}
    for name, sec, _ in kernels:
        category = kernel_category(name)
        by_category[category] = by_category.get(category, 0.0) + sec
    heaviest = sorted(kernels, key=lambda k: -k[1])[:top]
    return {
        "step_s": wall_s / steps,
        "busy": busy / wall_s if wall_s else 0.0,
        "categories": {
            c: sec / steps for c, sec in sorted(by_category.items(), key=lambda kv: -kv[1])
        },
        "top": [[name[:90], sec / steps, calls // steps] for name, sec, calls in heaviest],
    }


def largest_power_of_two(limit_bytes: float, fixed: float, per_sample: float, cap: int) -> int:
    """The largest power-of-two micro-batch m <= cap with fixed + per_sample·m <= limit (at least 1)."""
    m = 1
    while m * 2 <= cap and fixed + per_sample * (m * 2) <= limit_bytes:
        m *= 2
    return m


def lognormal_lengths(
    n: int, median: int, sigma: float, low: int, high: int, seed: int
) -> list[int]:
    """Record lengths like a chat SFT set: log-normal around the median, clipped to [low, high]."""
    rng = random.Random(seed)
    return [min(high, max(low, round(median * math.exp(rng.gauss(0.0, sigma))))) for _ in range(n)]


def relative_gap(a: list[float], b: list[float]) -> float:
    """Largest |a_i - b_i| / |b_i| over the steps both ran."""
    pairs = list(zip(a, b, strict=False))
    return max((abs(x - y) / max(abs(y), 1e-12) for x, y in pairs), default=float("nan"))


# -- data ---------------------------------------------------------------------------------------------
class Documents:
    """A deterministic stream of random-token records with log-normal lengths."""

    def __init__(self, vocab: int, seq: int, seed: int, smoke: bool) -> None:
        median = 400 if not smoke else 24
        self.lengths = lognormal_lengths(20000, median, 0.9, 8, seq, seed)
        self.vocab, self.seed, self.pos = vocab, seed, 0

    def take(self) -> list[int]:
        """The next record's token ids (labels are the ids: every token is learned)."""
        n = self.lengths[self.pos % len(self.lengths)]
        rng = random.Random(self.seed * 7919 + self.pos)
        self.pos += 1
        return [rng.randrange(3, self.vocab) for _ in range(n)]


def padded_batch(docs: list[list[int]], pad_id: int = 0) -> dict[str, Any]:
    """Records padded to the longest one, with attention_mask and ignored labels on padding."""
    import torch

    width = max(len(d) for d in docs)
    ids = [d + [pad_id] * (width - len(d)) for d in docs]
    mask = [[1] * len(d) + [0] * (width - len(d)) for d in docs]
    labels = [d + [-100] * (width - len(d)) for d in docs]
    return {
        "input_ids": torch.tensor(ids),
        "attention_mask": torch.tensor(mask),
        "labels": torch.tensor(labels),
    }


def packed_batch(docs: list[list[int]], length: int) -> dict[str, Any]:
    """Records packed into one row of `length` tokens with per-record positions (trainer's packer)."""
    import torch

    from kubetune_trainer import perf

    row = perf.pack_documents([(d, d) for d in docs], length, pad_id=0)
    return {k: torch.tensor([v]) for k, v in row.items()}


def fill(docs: Documents, budget: int) -> list[list[int]]:
    """Whole records, in stream order, while they fit in `budget` tokens (at least one)."""
    out: list[list[int]] = []
    used = 0
    while True:
        n = docs.lengths[docs.pos % len(docs.lengths)]
        if out and used + n > budget:
            return out
        out.append(docs.take())
        used += n


def random_rows(rows: int, seq: int, vocab: int, seed: int) -> Any:
    """Random token rows from a seeded generator."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (rows, seq), generator=g)


# -- models and engines ----------------------------------------------------------------------------------
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


# -- measuring ------------------------------------------------------------------------------------------
class Device:
    """Memory readings and synchronisation that work on CUDA and, trivially, on CPU."""

    def __init__(self) -> None:
        import torch

        self.torch = torch
        self.cuda = torch.cuda.is_available()
        self.name = torch.cuda.get_device_name() if self.cuda else "cpu"
        self.total = torch.cuda.get_device_properties(0).total_memory if self.cuda else 0

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def reset_peak(self) -> None:
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats()

    def peak(self) -> tuple[int, int]:
        """(max allocated, max reserved) bytes since the last reset."""
        if not self.cuda:
            return 0, 0
        return self.torch.cuda.max_memory_allocated(), self.torch.cuda.max_memory_reserved()


def is_oom(e: BaseException) -> bool:
    """Whether an exception is the device running out of memory."""
    return "out of memory" in str(e).lower() or type(e).__name__ == "OutOfMemoryError"


def to_device(batch: dict[str, Any], device: Any) -> dict[str, Any]:
    """Tensors to the device (non-blocking); plain numbers stay."""
    return {k: v.to(device, non_blocking=True) if hasattr(v, "to") else v for k, v in batch.items()}


def train_step(engine: Any, batch: dict[str, Any]) -> Any:
    """forward, backward, optimizer step; returns the loss tensor (no host sync)."""
    loss = engine(**to_device(batch, engine.device)).loss
    engine.backward(loss)
    engine.step()
    return loss.detach()


class Runner:
    """Runs one variant's tasks in this process and records the results."""

    def __init__(
        self, variant: str, plan: Plan, out: Path, limits: dict[str, float], deadline: float
    ) -> None:
        self.variant, self.plan, self.out, self.limits, self.deadline = (
            variant,
            plan,
            out,
            limits,
            deadline,
        )
        self.dev = Device()
        self.precision = "bf16" if self.dev.cuda else "fp32"
        self.micro: dict[str, int] = {}

    # batches ------------------------------------------------------------------------------------------
    def fixed_batch(self, task: Task, rows: int, seed: int, vocab: int) -> dict[str, Any]:
        """Full-length rows; ours feeds them as packed rows (one record each), as the trainer does."""
        import torch

        ids = random_rows(rows, task.seq, vocab, seed)
        if self.variant == "baseline":
            return {"input_ids": ids, "labels": ids.clone()}
        positions = torch.arange(task.seq).expand(rows, -1).contiguous()
        labels = ids.clone()
        labels[:, 0] = -100
        return self.ours_inputs({"input_ids": ids, "labels": labels, "position_ids": positions})

    def ours_inputs(self, batch: dict[str, Any]) -> dict[str, Any]:
        from kubetune_trainer import perf

        return perf.varlen_inputs(batch) if self.levers.get("varlen_attention") else batch

    # engine lifecycle -----------------------------------------------------------------------------------
    def build(self, task: Task) -> Any:
        factory = baseline_engine if self.variant == "baseline" else ours_engine
        engine, self.levers = factory(task, self.precision, self.dev.cuda, self.plan.lr)
        engine.train()
        return engine

    def memory_limit(self, task: Task) -> float:
        """Device memory the micro-batch may use: a share of the card, and for ours the baseline's peak."""
        if not self.dev.cuda:
            return float("inf")
        limit = self.dev.total * self.plan.memory_fraction
        return min(limit, self.limits.get(task.name, limit))

    def probe(self, engine: Any, task: Task, vocab: int) -> int:
        """Largest power-of-two micro-batch predicted to fit: peak memory at 1 and 2 rows, extrapolated."""
        if not self.dev.cuda:
            return self.plan.max_micro
        for seed in (1, 2):
            train_step(engine, self.fixed_batch(task, 1, seed, vocab))
        peaks = []
        for rows in (1, 2):
            self.dev.sync()
            self.dev.reset_peak()
            train_step(engine, self.fixed_batch(task, rows, 10 + rows, vocab))
            self.dev.sync()
            peaks.append(self.dev.peak()[0])
        per_row = max(peaks[1] - peaks[0], 1)
        return largest_power_of_two(
            self.memory_limit(task), peaks[0] - per_row, per_row, self.plan.max_micro
        )

    def timed(
        self, engine: Any, make: Callable[[int], dict[str, Any]], steps: int
    ) -> tuple[float, list[float], tuple[int, int], list[dict[str, Any]]]:
        """Warm-up, then `steps` timed steps on prepared batches; (seconds, losses, peaks, batches)."""
        for i in range(self.plan.warmup):
            train_step(engine, make(100 + i))
        batches = [make(1000 + i) for i in range(steps)]
        self.dev.sync()
        self.dev.reset_peak()
        start = time.perf_counter()
        losses = [train_step(engine, b) for b in batches]
        self.dev.sync()
        seconds = time.perf_counter() - start
        return seconds, [float(x) for x in losses], self.dev.peak(), batches

    def profile(self, engine: Any, make: Callable[[int], dict[str, Any]]) -> dict[str, Any]:
        """A few steps under torch.profiler: where the step time goes (never fails the result)."""
        steps = self.plan.profile_steps
        try:
            from torch.autograd import DeviceType
            from torch.profiler import ProfilerActivity
            from torch.profiler import profile as torch_profile

            batches = [make(2000 + i) for i in range(steps)]
            activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.dev.cuda else [])
            self.dev.sync()
            with torch_profile(activities=activities) as prof:
                start = time.perf_counter()
                for b in batches:
                    train_step(engine, b)
                self.dev.sync()
                wall = time.perf_counter() - start
            rows = prof.key_averages()
            if self.dev.cuda:
                kernels = [
                    (e.key, e.self_device_time_total / 1e6, e.count)
                    for e in rows
                    if e.device_type != DeviceType.CPU
                ]
            else:
                kernels = [(e.key, e.self_cpu_time_total / 1e6, e.count) for e in rows]
            if not kernels:
                return {"note": "the profiler recorded no kernels"}
            return time_breakdown(kernels, wall, steps)
        except Exception as e:  # the throughput numbers stand without it
            return {"note": f"profile failed: {type(e).__name__}: {str(e)[:200]}"}

    def finish(self, r: Result, engine: Any) -> Result:
        r.params, r.trainable = count_params(engine.module)
        r.levers = self.levers
        return r

    # tasks -------------------------------------------------------------------------------------------------
    def run_fixed(self, task: Task) -> Result:
        """Tokens/s, MFU and peak memory on full-length random rows at the largest fitting micro-batch."""
        cfg = SHAPES[task.shape]
        engine = self.build(task)
        micro = self.probe(engine, task, cfg["vocab_size"])
        while True:

            def make(seed: int, rows: int = micro) -> dict[str, Any]:
                return self.fixed_batch(task, rows, seed, cfg["vocab_size"])

            try:
                seconds, losses, (alloc, reserved), _ = self.timed(engine, make, self.plan.steps)
                break
            except RuntimeError as e:
                if not is_oom(e) or micro == 1:
                    raise
            print(f"{self.variant} {task.name}: micro-batch {micro} ran out of memory", flush=True)
            release(engine)
            engine, micro = None, micro // 2
            collect()
            engine = self.build(task)
        self.micro[task.name] = micro
        tps = micro * task.seq * self.plan.steps / seconds
        r = self.finish(Result(task.name, self.variant, True, micro_batch=micro, tokens_per_s=tps, real_tokens_per_s=tps,
                               peak_alloc_gib=alloc / 2**30, peak_reserved_gib=reserved / 2**30,
                               step_s=seconds / self.plan.steps, losses=losses), engine)  # fmt: skip
        r.mfu = mfu(
            tps,
            flops_per_token(
                r.params,
                r.trainable,
                cfg["num_hidden_layers"],
                cfg["hidden_size"],
                task.seq,
                task.method,
            ),
        )
        if task.name in PROFILED and self.plan.profile_steps:
            r.profile = self.profile(engine, make)
        release(engine)
        return r

    def run_varlen(self, task: Task) -> Result:
        """Real (non-padding) tokens/s on log-normal records: baseline pads per batch, ours packs."""
        cfg = SHAPES[task.shape]
        micro = self.micro.get(task.micro_from or "", 0)
        engine = self.build(task)
        if not micro:
            micro = self.probe(engine, task, cfg["vocab_size"])
        docs = Documents(cfg["vocab_size"], task.seq, seed=5, smoke=self.plan.smoke)

        def make(_: int) -> dict[str, Any]:
            if self.variant == "baseline":
                return padded_batch([docs.take() for _ in range(micro)])
            return self.ours_inputs(packed_batch(fill(docs, micro * task.seq), micro * task.seq))

        seconds, losses, (alloc, reserved), batches = self.timed(engine, make, self.plan.steps)
        real_timed = sum(real_tokens(b) for b in batches)
        all_timed = sum(int(b["input_ids"].numel()) for b in batches)
        r = self.finish(Result(task.name, self.variant, True, micro_batch=micro, tokens_per_s=all_timed / seconds,
                               real_tokens_per_s=real_timed / seconds, peak_alloc_gib=alloc / 2**30,
                               peak_reserved_gib=reserved / 2**30, step_s=seconds / self.plan.steps,
                               pad_fraction=1 - real_timed / all_timed, losses=losses), engine)  # fmt: skip
        release(engine)
        return r

    def run_parity(self, task: Task) -> Result:
        """Losses of the first steps on the same records: baseline padded, ours packed into one row."""
        cfg = SHAPES[task.shape]
        engine = self.build(task)
        docs = Documents(cfg["vocab_size"], task.seq, seed=11, smoke=self.plan.smoke)
        losses: list[float] = []
        started = time.perf_counter()
        for _ in range(self.plan.parity_steps):
            group = [docs.take() for _ in range(self.plan.parity_docs)]
            if self.variant == "baseline":
                batch = padded_batch(group)
            else:
                width = sum(len(d) for d in group)
                batch = self.ours_inputs(packed_batch(group, width + (-width) % 8))
            losses.append(float(train_step(engine, batch)))
            if time.time() > self.deadline - 20:
                break
        r = self.finish(Result(task.name, self.variant, True, losses=losses,
                               step_s=(time.perf_counter() - started) / max(1, len(losses))), engine)  # fmt: skip
        release(engine)
        return r

    def run(self, task: Task) -> Result:
        """One task, its failure recorded rather than raised, so the remaining tasks still run."""
        fn = {"fixed": self.run_fixed, "varlen": self.run_varlen, "parity": self.run_parity}[
            task.kind
        ]
        held = self.dev.torch.cuda.memory_allocated() / 2**30 if self.dev.cuda else 0.0
        try:
            result = fn(task)
        except Exception as e:
            import traceback

            traceback.print_exc()
            result = Result(
                task.name, self.variant, False, note=f"{type(e).__name__}: {str(e)[:300]}"
            )
        collect()
        if held > 0.5:
            result.note += f" (started with {held:.1f} GiB still allocated)"
        return result


def real_tokens(batch: dict[str, Any]) -> int:
    """Tokens of records in a batch, padding excluded."""
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum())
    if "cu_seq_lens_q" in batch or "position_ids" in batch:
        ids = batch["input_ids"]
        labels = batch["labels"]
        return int(ids.numel()) - trailing_padding(labels)
    return int(batch["input_ids"].numel())


def trailing_padding(labels: Any) -> int:
    """Ignored labels at the end of a packed row: the padding segment."""
    flat = labels.reshape(-1).tolist()
    n = 0
    for x in reversed(flat):
        if x != -100:
            break
        n += 1
    return n


# -- the report -----------------------------------------------------------------------------------------
def load_results(path: Path) -> list[dict[str, Any]]:
    """All results recorded so far (one JSON object per line)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def pick(results: list[dict[str, Any]], task: str, variant: str) -> dict[str, Any] | None:
    """The latest result of a task and variant."""
    found = [r for r in results if r["task"] == task and r["variant"] == variant]
    return found[-1] if found else None


def fmt(x: float | None, spec: str) -> str:
    return "—" if x is None else format(x, spec)


def fixed_rows(results: list[dict[str, Any]], tasks: list[Task]) -> list[str]:
    goals = {
        "1B full ZeRO-2": "≥1.5x, ≥57% MFU",
        "1B full ZeRO-3": "≥1.5x",
        "1B LoRA ZeRO-2": "≥1.6x",
        "8B LoRA ZeRO-2": "≥55% MFU",
    }
    lines = [
        "| config | baseline micro-batch | baseline tokens/s | baseline MFU | baseline peak GiB (alloc/reserved) "
        "| ours micro-batch | ours tokens/s | ours MFU | ours peak GiB (alloc/reserved) | ours/baseline | goal |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in tasks:
        b, o = pick(results, t.compare_to or t.name, "baseline"), pick(results, t.name, "ours")
        if not o and (t.compare_to or not b):
            continue
        lines.append(
            "| "
            + " | ".join(
                [
                    f"{t.name} (baseline: {t.compare_to})" if t.compare_to else t.name,
                    *cells(b),
                    *cells(o),
                    ratio(b, o, "tokens_per_s"),
                    goals.get(t.name, "exploratory" if t.compare_to else ""),
                ]
            )
            + " |"
        )
    return lines


def cells(r: dict[str, Any] | None) -> list[str]:
    if r is None:
        return ["not run"] * 4
    if not r["ok"]:
        return ["failed: " + r["note"][:80].replace("|", "/"), "", "", ""]
    m = r.get("mfu")
    return [
        str(r["micro_batch"]),
        f"{r['tokens_per_s']:,.0f}",
        "—" if m is None else f"{100 * m:.1f}%",
        f"{r['peak_alloc_gib']:.1f} / {r['peak_reserved_gib']:.1f}",
    ]


def ratio(b: dict[str, Any] | None, o: dict[str, Any] | None, key: str) -> str:
    if not b or not o or not b["ok"] or not o["ok"] or not b[key]:
        return "—"
    return f"**{o[key] / b[key]:.2f}x**"


def varlen_rows(results: list[dict[str, Any]], tasks: list[Task]) -> list[str]:
    lines = [
        "| config | baseline (padded) micro-batch | baseline real tokens/s | baseline padding | baseline peak GiB "
        "| ours (packed) tokens per micro-batch | ours real tokens/s | ours padding | ours peak GiB | ours/baseline | goal |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in tasks:
        b, o = pick(results, t.name, "baseline"), pick(results, t.name, "ours")
        if not b and not o:
            continue
        row = [t.name]
        for r, unit in ((b, 1), (o, 0)):
            if r is None or not r["ok"]:
                row += [
                    "not run" if r is None else "failed: " + r["note"][:80].replace("|", "/"),
                    "",
                    "",
                    "",
                ]
                continue
            row += [
                str(r["micro_batch"]) if unit else f"{r['micro_batch']}x{t.seq}",
                f"{r['real_tokens_per_s']:,.0f}",
                f"{100 * r['pad_fraction']:.0f}%",
                f"{r['peak_alloc_gib']:.1f} / {r['peak_reserved_gib']:.1f}",
            ]
        lines.append("| " + " | ".join([*row, ratio(b, o, "real_tokens_per_s"), "≥2x"]) + " |")
    return lines


def parity_lines(results: list[dict[str, Any]]) -> list[str]:
    b, o = pick(results, "parity", "baseline"), pick(results, "parity", "ours")
    if not b or not o or not b["ok"] or not o["ok"]:
        return [
            "Loss parity: not measured"
            + (f" ({(b or o or {}).get('note', '')})" if (b or o) else "")
            + "."
        ]
    n = min(len(b["losses"]), len(o["losses"]))
    gap = relative_gap(o["losses"][:n], b["losses"][:n])
    return [
        f"Loss parity over the first {n} optimizer steps on the same records (baseline padded per batch, "
        f"ours packed into one row with per-record positions and every lever on): "
        f"max relative difference **{gap:.2e}**; first loss {b['losses'][0]:.4f} vs {o['losses'][0]:.4f}, "
        f"last {b['losses'][n - 1]:.4f} vs {o['losses'][n - 1]:.4f}.",
    ]


def profile_lines(results: list[dict[str, Any]]) -> list[str]:
    """Where the step time goes, for the profiled configs (empty when none was profiled)."""
    profiled = [r for r in results if r.get("profile")]
    if not profiled:
        return []
    lines = [
        "## Where the step time goes (torch.profiler, after the timed steps)",
        "",
        "busy: summed kernel time over wall time (well under 100%: the GPU waits on the host).",
        "",
    ]
    for r in profiled:
        p = r["profile"]
        head = f"- **{r['task']}, {r['variant']}** (micro-batch {r['micro_batch']})"
        if "note" in p:
            lines.append(f"{head}: {p['note']}")
            continue
        shares = ", ".join(
            f"{c} {100 * sec / p['step_s']:.0f}%" for c, sec in p["categories"].items()
        )
        top = "; ".join(f"`{n}` {1000 * sec:.1f} ms x{calls}" for n, sec, calls in p["top"][:5])
        lines.append(
            f"{head}: step {1000 * p['step_s']:.0f} ms, busy {100 * p['busy']:.0f}%: {shares}. "
            f"Heaviest: {top}."
        )
    return [*lines, ""]


def render(results: list[dict[str, Any]], device: str, smoke: bool) -> str:
    """The results file: header, both tables, loss parity, and how the numbers were taken."""
    groups = tasks_for(smoke)
    all_tasks = [t for g in groups for t in g]
    fixed = [t for t in all_tasks if t.kind == "fixed"]
    varlen = [t for t in all_tasks if t.kind == "varlen"]
    ours = next((r for r in results if r["variant"] == "ours" and r["ok"]), None)
    levers = ", ".join(f"{k}={v}" for k, v in (ours or {}).get("levers", {}).items()) or "—"
    lines = [
        f"# GPU throughput: kubetune trainer vs a plain DeepSpeed loop{' (CPU smoke run)' if smoke else ''}",
        "",
        f"Device: **{device}**. Software: {software()}.",
        "",
        "Random-init Llama-3.2-1B / Llama-3.1-8B shapes, sequence length 2048, bf16, one GPU (world size 1). "
        "baseline: transformers Llama (sdpa) + deepspeed.initialize + torch fused AdamW, no packing. "
        f"ours: the trainer's method setup, DeepSpeed config and engine with its default levers ({levers}). "
        "Micro-batch: the largest power of two predicted to fit (peak memory at 1 and 2 rows, extrapolated): "
        "the baseline's in 92% of the device memory, ours in the baseline's measured peak.",
        "",
        "## Fixed-length sequences",
        "",
        *fixed_rows(results, fixed),
        "",
        "MFU: FLOPs per token 6N + 12·L·d·s for full fine-tuning, 4N + 2N_trainable + 12·L·d·s for LoRA "
        "(N: all parameters, L layers, d hidden size, s = 2048), over 989 TFLOP/s.",
        "",
        "## Variable-length records (log-normal, median ~400 tokens, max 2048)",
        "",
        *varlen_rows(results, varlen),
        "",
        "Real tokens/s counts record tokens only, not padding.",
        "",
        "## Loss parity",
        "",
        *parity_lines(results),
        "",
        *profile_lines(results),
        "Per-step numbers: results.jsonl beside this file.",
        "",
    ]
    return "\n".join(lines)


def software() -> str:
    import importlib.metadata as md

    parts = []
    for name in ("torch", "transformers", "deepspeed", "peft", "liger-kernel"):
        try:
            parts.append(f"{name} {md.version(name)}")
        except md.PackageNotFoundError:
            parts.append(f"{name} absent")
    return ", ".join(parts)


def write_report(out: Path, device: str, smoke: bool) -> None:
    (out / "gpu_throughput.md").write_text(
        render(load_results(out / "results.jsonl"), device, smoke)
    )


# -- processes ------------------------------------------------------------------------------------------------
def worker(spec_path: Path) -> int:
    """Run one variant's group of tasks in this process (spawned by the coordinator)."""
    spec = json.loads(spec_path.read_text())
    from kubetune_trainer import dist

    dist.setup()
    plan = Plan(**spec["plan"])
    out = Path(spec["out"])
    runner = Runner(spec["variant"], plan, out, spec["limits"], spec["deadline"])
    for t in spec["tasks"]:
        task = Task(**{**t, "perf": tuple(tuple(kv) for kv in t["perf"])})  # JSON gave lists
        if time.time() > spec["deadline"] - spec["min_left_s"]:
            result = Result(task.name, runner.variant, False, note="skipped: out of time")
        else:
            started = time.perf_counter()
            result = runner.run(task)
            print(summary(result, time.perf_counter() - started), flush=True)
        with (out / "results.jsonl").open("a") as f:
            f.write(json.dumps(asdict(result)) + "\n")
        write_report(out, runner.dev.name, plan.smoke)
    dist.cleanup()
    return 0


def summary(r: Result, seconds: float) -> str:
    if not r.ok:
        return f"[{r.variant}] {r.task}: FAILED {r.note}"
    return (
        f"[{r.variant}] {r.task}: micro {r.micro_batch}, {r.tokens_per_s:,.0f} tok/s "
        f"(real {r.real_tokens_per_s:,.0f}), MFU {fmt(r.mfu and 100 * r.mfu, '.1f')}%, "
        f"peak {r.peak_alloc_gib:.1f}/{r.peak_reserved_gib:.1f} GiB, {len(r.losses)} losses, {seconds:.0f}s"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def baseline_peaks(results: list[dict[str, Any]], tasks: list[Task]) -> dict[str, float]:
    """Peak bytes the baseline allocated per task: ours must fit its micro-batch under them."""
    limits = {}
    for t in tasks:
        b = pick(results, t.compare_to or t.name, "baseline")
        if b and b["ok"] and b["peak_alloc_gib"]:
            limits[t.name] = b["peak_alloc_gib"] * 2**30
    return limits


def spawn(variant: str, tasks: list[Task], plan: Plan, out: Path, deadline: float) -> int:
    """One worker process for a variant's group of tasks; returns its exit code."""
    spec = {
        "variant": variant,
        "tasks": [asdict(t) for t in tasks],
        "plan": asdict(plan),
        "out": str(out),
        "deadline": deadline,
        "min_left_s": 8 if plan.smoke else 30,
        "limits": baseline_peaks(load_results(out / "results.jsonl"), tasks),
    }
    spec_path = out / f"spec-{variant}-{tasks[0].name.replace(' ', '_')}.json"
    spec_path.write_text(json.dumps(spec))
    env = dict(
        os.environ,
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(free_port()),
        RANK="0",
        LOCAL_RANK="0",
        WORLD_SIZE="1",
    )
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(spec_path)]
    try:
        return subprocess.run(
            cmd, env=env, timeout=max(5.0, deadline - time.time() + 15)
        ).returncode
    except subprocess.TimeoutExpired:
        print(f"{variant} worker for {tasks[0].name} ran out of time", flush=True)
        return 124
    finally:
        spec_path.unlink(missing_ok=True)


def pending(tasks: list[Task], variant: str, results: list[dict[str, Any]]) -> list[Task]:
    """The tasks still without a good result for this variant (all of them on a fresh run)."""
    return [t for t in tasks if not (pick(results, t.name, variant) or {}).get("ok")]


def coordinate(smoke: bool, out: Path, budget_s: float, resume: bool = False) -> int:
    """Baseline then ours for each group, most important group first, within the time budget.

    resume keeps the results already in out and runs only what has no good result yet, so a
    second short GPU call finishes what the first ran out of time for.
    """
    out.mkdir(parents=True, exist_ok=True)
    if not resume:
        (out / "results.jsonl").unlink(missing_ok=True)
    plan = plan_for(smoke)
    deadline = time.time() + budget_s
    codes = []
    for group in tasks_for(smoke):
        variants = ("ours",) if all(t.compare_to for t in group) else ("baseline", "ours")
        for variant in variants:
            todo = pending(group, variant, load_results(out / "results.jsonl"))
            if not todo:
                continue
            if time.time() > deadline - (5 if smoke else 30):
                print(f"skipping {variant} {todo[0].name}: out of time", flush=True)
                continue
            codes.append(spawn(variant, todo, plan, out, deadline))
    results = load_results(out / "results.jsonl")
    device = device_name()
    (out / "gpu_throughput.md").write_text(render(results, device, smoke))
    print((out / "gpu_throughput.md").read_text(), flush=True)
    latest = [pick(results, r["task"], r["variant"]) or r for r in results]
    return 0 if all(c == 0 for c in codes) and all(r["ok"] for r in latest) else 1


def device_name() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--smoke", action="store_true", help="tiny shapes, 2 steps, for CPU checks")
    p.add_argument("--out", default=os.environ.get("OUT", "bench/results"), help="results folder")
    p.add_argument("--budget-s", type=float, default=400.0, help="seconds for the whole benchmark")
    p.add_argument(
        "--resume", action="store_true", help="keep the results in --out; run only what is missing"
    )
    p.add_argument("--worker", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        return worker(Path(a.worker))
    return coordinate(a.smoke, Path(a.out), a.budget_s, a.resume)


if __name__ == "__main__":
    sys.exit(main())
