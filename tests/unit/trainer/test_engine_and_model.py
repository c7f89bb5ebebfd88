"""DeepSpeed config derivation, method selection and the QLoRA-without-GPU error."""

from __future__ import annotations

import pytest

from kubetune_trainer import engine, model
from kubetune_trainer.config import MethodConfig, ModelConfig, TrainerConfig
from kubetune_trainer.errors import BadInputError

pytestmark = pytest.mark.unit


def cfg(**sections: dict) -> TrainerConfig:
    base: dict = {
        "job": {"name": "j"},
        "model": {"source": "file:///m"},
        "data": {"train": "/d"},
        "method": {"type": "full"},
    }
    base.update(sections)
    return TrainerConfig.model_validate(base)


def test_accumulation_and_batch_sizes() -> None:
    c = engine.ds_config(
        cfg(
            training={
                "micro_batch_size": 2,
                "global_batch_size": 32,
                "gradient_accumulation_steps": 4,
            }
        ),
        world_size=4,
        precision="fp32",
    )
    assert c["gradient_accumulation_steps"] == 4 and c["train_batch_size"] == 32


def test_global_batch_must_divide() -> None:
    with pytest.raises(BadInputError, match="global_batch_size=10"):
        engine.ds_config(
            cfg(training={"micro_batch_size": 4, "global_batch_size": 10}),
            world_size=2,
            precision="fp32",
        )


def test_zero3_offload_precision_and_overrides_last() -> None:
    c = engine.ds_config(
        cfg(deepspeed={"zero_stage": 3, "offload_optimizer": "cpu", "offload_parameters": "cpu",
                       "overrides": {"zero_optimization": {"stage3_max_live_parameters": 5}, "gradient_clipping": 0.5}}),
        world_size=1, precision="bf16",
    )  # fmt: skip
    z = c["zero_optimization"]
    assert (
        z["stage"] == 3
        and z["offload_optimizer"]["device"] == "cpu"
        and z["offload_param"]["device"] == "cpu"
    )
    assert z["stage3_max_live_parameters"] == 5 and c["gradient_clipping"] == 0.5
    assert c["bf16"]["enabled"] and not c["fp16"]["enabled"]
    assert "torch_adam" not in c["optimizer"]["params"]  # DeepSpeedCPUAdam with offload


def test_parameter_offload_needs_zero3() -> None:
    with pytest.raises(BadInputError, match="offload_parameters needs zero_stage 3"):
        engine.ds_config(cfg(deepspeed={"zero_stage": 2, "offload_parameters": "cpu"}), 1, "fp32")


def test_nvme_needs_a_path() -> None:
    with pytest.raises(BadInputError, match="nvme_path"):
        engine.ds_config(cfg(deepspeed={"zero_stage": 3, "offload_optimizer": "nvme"}), 1, "fp32")


@pytest.mark.parametrize(
    ("requested", "cuda", "bf16", "expected"),
    [
        ("auto", False, False, "fp32"),
        ("auto", True, True, "bf16"),
        ("auto", True, False, "fp16"),
        ("bf16", False, False, "bf16"),
    ],
)
def test_precision(requested: str, cuda: bool, bf16: bool, expected: str) -> None:
    assert engine.resolve_precision(requested, cuda, bf16) == expected


def test_fp16_on_cpu_is_refused() -> None:
    with pytest.raises(BadInputError, match="fp16 needs a GPU"):
        engine.resolve_precision("fp16", False, False)


def test_deep_merge_keeps_siblings() -> None:
    assert engine.deep_merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}}) == {"a": {"b": 1, "c": 3}}


NAMES = [
    "model.embed_tokens.weight",
    "model.layers.0.self_attn.q_proj.weight",
    "model.layers.1.self_attn.q_proj.weight",
    "model.layers.1.mlp.up_proj.weight",
    "model.norm.weight",
    "lm_head.weight",
]


def test_partial_top_layers_and_modules() -> None:
    assert model.partial_trainable(NAMES, None, 1) == {NAMES[2], NAMES[3]}
    assert model.partial_trainable(NAMES, None, 1, head={"lm_head.weight"}) == {
        NAMES[2],
        NAMES[3],
        "lm_head.weight",
    }
    assert model.partial_trainable(NAMES, ["lm_head"], None) == {"lm_head.weight"}


def test_partial_top_layers_train_the_head_too() -> None:
    """topLayers N: the last N blocks and the output head train (as the API says); the lower
    blocks, the embeddings and the final norm stay frozen."""
    from kubetune_trainer.tiny import build_model

    tiny = build_model(vocab_size=64, hidden=32, layers=3)
    method = MethodConfig(type="partial", top_layers=1)
    tuned = model.apply_method(tiny, method, seed=0, gradient_checkpointing=False)
    trains = {n for n, p in tuned.named_parameters() if p.requires_grad}
    assert "lm_head.weight" in trains
    assert {n for n in trains if n != "lm_head.weight"} == {
        n for n, _ in tuned.named_parameters() if n.startswith("model.layers.2.")
    }


def test_partial_needs_a_match() -> None:
    with pytest.raises(BadInputError, match="matches no parameter"):
        model.partial_trainable(NAMES, ["nothing"], None)
    with pytest.raises(BadInputError, match="needs trainable_modules or top_layers"):
        model.partial_trainable(NAMES, None, None)


def test_qlora_without_cuda_is_a_clear_error() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(BadInputError, match="qlora needs a CUDA GPU"):
        model.load_model(
            "/nowhere",
            ModelConfig(source="file:///nowhere"),
            MethodConfig(type="qlora"),
            {},
            torch.float32,
        )


def test_fetch_reports_missing_model(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(BadInputError, match=r"no config\.json"):
        model.fetch(f"file://{tmp_path}", tmp_path / "cache")


@pytest.mark.parametrize(
    ("dtype", "precision", "read_as"),
    [
        ("auto", "fp32", "auto"),
        ("auto", "bf16", "auto"),
        ("float32", "bf16", "float32"),
        ("float32", "fp16", "float32"),
        ("bfloat16", "bf16", "bfloat16"),
        ("float16", "fp16", "float16"),
    ],
)
def test_model_dtype_fits_the_precision(dtype: str, precision: str, read_as: str) -> None:
    assert model.load_dtype(dtype, precision) == read_as


@pytest.mark.parametrize(
    ("dtype", "precision", "advice"),
    [
        ("bfloat16", "fp32", "auto or float32, or spec.training.precision to bf16"),
        ("bfloat16", "fp16", "auto or float32 or float16, or spec.training.precision to bf16"),
        ("float16", "bf16", "auto or float32 or bfloat16, or spec.training.precision to fp16"),
        ("float16", "fp32", "auto or float32, or spec.training.precision to fp16"),
    ],
)
def test_model_dtype_contradicting_the_precision_is_refused(
    dtype: str, precision: str, advice: str
) -> None:
    with pytest.raises(BadInputError) as err:
        model.load_dtype(dtype, precision)
    assert f"spec.model.dtype {dtype} contradicts spec.training.precision" in str(err.value)
    assert advice in str(err.value)
