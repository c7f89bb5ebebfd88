"""GPU out of memory: recognise it, say which spec fields change the memory a step needs.

Retrying an attempt with the same shapes runs out of memory again (the data order is the same),
so the trainer exits with its own code and the operator fails the job at once instead of
spending the retries; the checkpoints stay for a job with smaller settings to resume from.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

FAULT_GPU_OOM = "KUBETUNE_FAULT_GPU_OOM"


def is_gpu_oom(error: BaseException) -> bool:
    """torch's OutOfMemoryError, or a RuntimeError carrying the CUDA allocator's message."""
    return type(error).__name__ == "OutOfMemoryError" or "CUDA out of memory" in str(error)


def memory_in_use() -> str:
    """'; peak X of Y GiB on <device>' at the failure, or '' without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return ""
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    peak = torch.cuda.max_memory_allocated() / 2**30
    return f"; peak {peak:.1f} of {props.total_memory / 2**30:.1f} GiB on {props.name}"


def explain(error: BaseException, micro_batch: int, seq_length: int, where: str = "") -> str:
    """The message users read in status.lastFailure: what ran out and what to change."""
    first = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
    return (
        f"GPU out of memory at micro-batch {micro_batch} x {seq_length} tokens{where}. "
        "Lower spec.training.microBatchSize (spec.training.globalBatchSize keeps the batch the "
        "optimizer sees) or spec.dataset.maxSeqLength, set "
        "spec.training.performance.activationCheckpointing to selective or full, or raise "
        "spec.deepspeed.zeroStage / offload to CPU; checkpoint.resume continues from this job's "
        f"checkpoints. Not retried: the same settings run out again. ({first})"
    )


def injected_oom(step: int, rank: int, env: Mapping[str, str] = os.environ) -> None:
    """Raise torch's OutOfMemoryError at a step on one rank: a fault hook for tests on machines
    without a GPU. KUBETUNE_FAULT_GPU_OOM="RANK:STEP"; unset: nothing."""
    value = env.get(FAULT_GPU_OOM)
    if not value:
        return
    at_rank, at_step = (int(x) for x in value.split(":"))
    if (rank, step) == (at_rank, at_step):
        import torch

        raise torch.OutOfMemoryError(
            "CUDA out of memory. Tried to allocate 2.00 GiB (injected by KUBETUNE_FAULT_GPU_OOM)"
        )


def describe(error: BaseException, cfg: Any) -> str:
    """explain() for a TrainerConfig, with the device's memory when there is one."""
    return explain(error, cfg.training.micro_batch_size, cfg.data.max_seq_length, memory_in_use())
