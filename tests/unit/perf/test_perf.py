"""The throughput levers' pure parts: resolution, DeepSpeed settings, packed rows and boundaries."""

from __future__ import annotations

import pytest
import torch

from kubetune_trainer import data, perf
from kubetune_trainer.config import PerfConfig
from kubetune_trainer.engine import deep_merge
from kubetune_trainer.errors import BadInputError

pytestmark = pytest.mark.unit


def test_levers_are_off_without_cuda() -> None:
    levers = perf.resolve(PerfConfig(), cuda=False, gradient_checkpointing=False)
    assert levers == perf.Levers(
        liger=False, varlen_attention=False, fused_optimizer=False, checkpoint_every=0
    )


def test_on_without_the_means_is_bad_input_naming_the_field() -> None:
    with pytest.raises(
        BadInputError,
        match=r"spec\.training\.performance\.ligerKernels.*perf\.liger_kernels.*liger-kernel package",
    ):
        perf.resolve(PerfConfig(liger_kernels="on"), cuda=False, gradient_checkpointing=False)
    with pytest.raises(BadInputError, match=r"spec\.training\.performance\.varlenAttention"):
        perf.resolve(PerfConfig(varlen_attention="on"), cuda=False, gradient_checkpointing=False)


@pytest.mark.parametrize(
    ("mode", "flag", "every"),
    [("auto", False, 0), ("auto", True, 1), ("selective", False, 2), ("off", True, 0)],
)
def test_activation_checkpointing_modes(mode: str, flag: bool, every: int) -> None:
    cfg = PerfConfig.model_validate({"activation_checkpointing": mode})
    levers = perf.resolve(cfg, cuda=False, gradient_checkpointing=flag)
    assert levers.checkpoint_every == every


def test_ds_settings_fused_adamw_and_zero3_prefetch() -> None:
    on = perf.Levers(liger=True, varlen_attention=True, fused_optimizer=True, checkpoint_every=0)
    conf = perf.ds_settings(on, 3)
    assert conf["optimizer"] == {"params": {"fused": True}}
    assert conf["zero_optimization"]["stage3_prefetch_bucket_size"] > 0
    merged = deep_merge({"optimizer": {"type": "AdamW", "params": {"lr": 1e-4}}}, conf)
    assert merged["optimizer"] == {"type": "AdamW", "params": {"lr": 1e-4, "fused": True}}
    off = perf.Levers(
        liger=False, varlen_attention=False, fused_optimizer=False, checkpoint_every=0
    )
    assert "optimizer" not in perf.ds_settings(off, 2)


def test_packing_restarts_positions_and_ignores_starts() -> None:
    """The trainer's packer (data.pack), as varlen attention reads its rows."""
    [row] = data.pack([data.Example([5, 6, 7], [5, 6, 7]), data.Example([8, 9], [-100, 9])], 8, 0)
    assert row.ids == [5, 6, 7, 8, 9, 0, 0, 0]
    assert row.positions == [0, 1, 2, 0, 1, 0, 1, 2]
    assert row.labels == [-100, 6, 7, -100, 9, -100, -100, -100]


def test_cu_seqlens_split_rows_and_documents() -> None:
    positions = torch.tensor([[0, 1, 2, 0, 1], [3, 4, 0, 1, 2]])  # row 2 starts inside a record
    bounds, longest = perf.cu_seqlens(positions)
    assert bounds.tolist() == [0, 3, 5, 7, 10]
    assert bounds.dtype == torch.int32
    assert longest == 3


def test_varlen_inputs_adds_boundaries_only_for_packed_batches() -> None:
    plain = {"input_ids": torch.zeros(2, 4, dtype=torch.long)}
    assert perf.varlen_inputs(plain) is plain
    batch = perf.varlen_inputs(
        {**plain, "position_ids": torch.tensor([[0, 1, 0, 1], [0, 1, 2, 3]])}
    )
    assert batch["cu_seq_lens_q"].tolist() == [0, 2, 4, 8]
    assert batch["max_length_q"] == 4


def test_trainer_pack_records_positions_and_masks_record_starts() -> None:
    examples = [data.Example([1, 2, 3], [1, 2, 3]), data.Example([4, 5, 6, 7], [-100, 5, 6, 7])]
    rows = data.pack(examples, 4, pad_id=0)
    assert [r.positions for r in rows] == [[0, 1, 2, 0], [1, 2, 3, 0]]
    assert [r.labels for r in rows] == [[-100, 2, 3, -100], [5, 6, 7, -100]]
    batch = data.collate(rows)
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0], [1, 2, 3, 0]]


def test_padded_examples_have_no_position_ids() -> None:
    rows = data.pad_to([data.Example([1, 2], [1, 2])], 4, pad_id=0)
    assert "position_ids" not in data.collate(rows)
