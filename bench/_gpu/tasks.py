"""What the GPU benchmark measures: model shapes, tasks, run plans and the result record."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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
