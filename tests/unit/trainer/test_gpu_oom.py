"""GPU out of memory is recognised, explained with the spec fields to change, and injectable."""

from __future__ import annotations

import pytest
import torch

from kubetune_trainer import gpu_oom

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("error", "oom"),
    [
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
        (RuntimeError("CUDA out of memory. Tried to allocate 20.00 MiB (GPU 0)"), True),
        (RuntimeError("CUDA error: an illegal memory access was encountered"), False),
        (MemoryError(), False),
    ],
)
def test_is_gpu_oom(error: BaseException, oom: bool) -> None:
    assert gpu_oom.is_gpu_oom(error) is oom


def test_the_message_names_the_settings_and_the_fields_to_change() -> None:
    error = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")
    text = gpu_oom.explain(error, 16, 2048, "; peak 78.1 of 79.1 GiB on NVIDIA H100")
    assert text.startswith("GPU out of memory at micro-batch 16 x 2048 tokens; peak 78.1 of 79.1")
    for field in (
        "spec.training.microBatchSize",
        "spec.dataset.maxSeqLength",
        "spec.training.performance.activationCheckpointing",
        "spec.deepspeed.zeroStage",
    ):
        assert field in text
    assert text.endswith("(CUDA out of memory. Tried to allocate 2.00 GiB)")  # first line only


def test_injected_oom_hits_one_rank_at_one_step() -> None:
    env = {gpu_oom.FAULT_GPU_OOM: "1:3"}
    gpu_oom.injected_oom(3, rank=0, env=env)
    gpu_oom.injected_oom(2, rank=1, env=env)
    gpu_oom.injected_oom(3, rank=1, env={})
    with pytest.raises(torch.OutOfMemoryError) as raised:
        gpu_oom.injected_oom(3, rank=1, env=env)
    assert gpu_oom.is_gpu_oom(raised.value)
