"""The benchmark's arithmetic: MFU, where kernel time goes, micro-batch sizing, record lengths,
loss gaps and real (non-padding) tokens."""

from __future__ import annotations

import math
import random
from typing import Any

from bench._gpu.tasks import PEAK_BF16_FLOPS
from kubetune_trainer import flops


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
