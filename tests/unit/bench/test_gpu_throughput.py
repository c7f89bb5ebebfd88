"""The GPU throughput benchmark's arithmetic, batches, tasks and report (the whole script in
its CPU smoke mode: tests/e2e/bench)."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from bench import gpu_throughput
from bench._gpu import batches, stats, tasks
from kubetune_trainer.flops import flops_per_token

SCRIPT = Path(gpu_throughput.__file__)
# Its own op cache: builders with other compiler flags rebuild a shared one under it.
EXTENSIONS_DIR = Path.home() / ".cache" / "kubetune" / "torch_extensions-bench"


@pytest.mark.unit
def test_mfu_formula_matches_the_reference_measurement() -> None:
    """The issue's plain loop: 45.8k tokens/s on the 1B shape (1.236B parameters) is 38% MFU."""
    flops = flops_per_token(1_235_814_400, 1_235_814_400, 16, 2048, 2048, "full")
    assert stats.mfu(45_800, flops) == pytest.approx(0.38, abs=0.005)


@pytest.mark.unit
def test_lora_flops_count_frozen_weights_twice_and_adapters_three_times() -> None:
    full = flops_per_token(1000, 1000, 1, 1, 1, "full")
    lora = flops_per_token(1000, 10, 1, 1, 1, "lora")
    assert (full, lora) == (6000 + 12, 4000 + 20 + 12)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("limit", "fixed", "per", "cap", "want"),
    [(100, 20, 10, 64, 8), (100, 20, 10, 4, 4), (10, 20, 10, 64, 1), (1e9, 0, 1, 16, 16)],
)
def test_largest_power_of_two(limit: float, fixed: float, per: float, cap: int, want: int) -> None:
    assert stats.largest_power_of_two(limit, fixed, per, cap) == want


@pytest.mark.unit
def test_lognormal_lengths_look_like_chat_data() -> None:
    lengths = stats.lognormal_lengths(5000, 400, 0.9, 8, 2048, seed=1)
    assert 370 < statistics.median(lengths) < 430
    assert min(lengths) >= 8 and max(lengths) == 2048


@pytest.mark.unit
def test_relative_gap() -> None:
    assert stats.relative_gap([1.0, 2.2], [1.0, 2.0]) == pytest.approx(0.1)


@pytest.mark.unit
def test_packed_batch_keeps_every_record_token() -> None:
    docs = batches.Documents(1000, 128, seed=3, smoke=True)
    group = batches.fill(docs, 256)
    batch = batches.packed_batch(group, 256)
    assert batch["input_ids"].shape == (1, 256)
    assert stats.real_tokens(batch) == sum(len(d) for d in group) <= 256
    padded = batches.padded_batch(group)
    assert stats.real_tokens(padded) == sum(len(d) for d in group)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("name", "category"),
    [
        ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64", "matmul"),
        ("nvjet_tst_128x256_64x4_2x1_v_bz_coopB_TNN", "matmul"),
        ("void pytorch_flash::flash_bwd_dq_dk_dv_loop_seqk_parallel_kernel<...>", "attention"),
        ("void at::native::(anonymous namespace)::multi_tensor_apply_kernel<FusedAdamMathFunctor>", "optimizer"),
        ("_rms_norm_backward_kernel", "fused (triton)"),
        ("triton_poi_fused_add_mul_0", "fused (triton)"),
        ("Memcpy DtoD (Device -> Device)", "memory copies"),
        ("void at::native::vectorized_elementwise_kernel<4, ...>", "elementwise"),
        ("aten::addmm", "matmul"),
        ("ncclDevKernel_AllReduce_Sum_bf16_RING_LL", "communication"),
        ("cudaLaunchKernel", "other"),
    ],
)  # fmt: skip
def test_kernel_category(name: str, category: str) -> None:
    assert stats.kernel_category(name) == category


@pytest.mark.unit
def test_time_breakdown_is_per_step_and_says_how_busy_the_device_was() -> None:
    kernels = [("gemm_a", 1.2, 40), ("flash_fwd", 0.4, 20), ("vectorized_elementwise", 0.2, 100)]
    p = stats.time_breakdown(kernels, wall_s=2.0, steps=2, top=2)
    assert p["step_s"] == 1.0 and p["busy"] == pytest.approx(0.9)
    assert p["categories"] == pytest.approx({"matmul": 0.6, "attention": 0.2, "elementwise": 0.1})
    assert list(p["categories"]) == ["matmul", "attention", "elementwise"]  # heaviest first
    assert p["top"] == [["gemm_a", 0.6, 20], ["flash_fwd", 0.2, 10]]


@pytest.mark.unit
def test_a_resumed_run_redoes_only_what_has_no_good_result() -> None:
    group = tasks.tasks_for(False)[1]
    results = [
        {"task": group[0].name, "variant": "baseline", "ok": True},
        {"task": group[1].name, "variant": "baseline", "ok": True},
        {"task": group[1].name, "variant": "baseline", "ok": False},  # the latest one counts
        {"task": group[0].name, "variant": "ours", "ok": True},
    ]
    assert gpu_throughput.pending(group, "baseline", results) == [group[1]]
    assert gpu_throughput.pending(group, "ours", results) == [group[1]]
    assert gpu_throughput.pending(group, "ours", []) == group
