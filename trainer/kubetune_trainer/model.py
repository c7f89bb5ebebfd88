"""Fetch the base model and tokenizer from their source, load them, and apply the method."""

from __future__ import annotations

import re
from collections.abc import Collection
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from . import hub
from .checkpoint.storage import download, local_path
from .config import MethodConfig, ModelConfig, StorageConfig
from .errors import BadInputError


def fetch(
    source: str, cache_dir: Path, revision: str | None = None, storage: StorageConfig | None = None
) -> str:
    """A local directory holding the model (see fetch_resolved)."""
    return fetch_resolved(source, cache_dir, revision, storage)[0]


def fetch_resolved(
    source: str, cache_dir: Path, revision: str | None = None, storage: StorageConfig | None = None
) -> tuple[str, str | None]:
    """A local directory holding the model, and the hub commit it came from (hf:// only).

    s3:// and hf:// are downloaded; hf:// resolves its revision to a commit first.
    """
    parsed = urlparse(source)
    if parsed.scheme == "s3":
        dest = download(
            source, "spec.model.source", storage or StorageConfig(), cache_dir / "model"
        )
        if not dest.is_dir():
            raise BadInputError(
                f"spec.model.source {source!r}: names one object; give the model's folder"
            )
        return str(dest), None
    if parsed.scheme == "hf":
        ref = hub.parse(source, "model.source", dataset=False)
        rev = hub.pick_revision(ref, revision, "model.revision")
        snap = hub.download(ref, rev, "model", "model.source")
        folder = snap.local / ref.path if ref.path else snap.local
        if not (folder / "config.json").is_file():
            raise BadInputError(f"model.source {source!r}: no config.json at commit {snap.commit}")
        return str(folder), snap.commit
    path = local_path(source)
    if not Path(path, "config.json").is_file():
        raise BadInputError(f"model.source {source!r}: no config.json in {path}")
    return path, None


def hub_kwargs(source: str, revision: str | None) -> dict[str, Any]:
    """Extra from_pretrained arguments: none, every source is a local folder once fetched."""
    return {}


def torch_dtype(name: str) -> Any:
    """The torch dtype for config.model.dtype."""
    import torch

    return {
        "auto": "auto",
        "bfloat16": torch.bfloat16,
        "float16": torch.float16,
        "float32": torch.float32,
    }[name]


def load_tokenizer(location: str, extra: dict[str, Any]) -> Any:
    """The tokenizer shipped with the model; a pad token is added if missing (eos reused)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(location, **extra)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(
    location: str, cfg: ModelConfig, method: MethodConfig, extra: dict[str, Any], dtype: Any
) -> Any:
    """The causal LM in the training dtype; QLoRA loads 4-bit weights (GPU only)."""
    import torch
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": cfg.trust_remote_code, **extra}
    if method.type == "qlora":
        if not torch.cuda.is_available():
            raise BadInputError(
                "method.type=qlora needs a CUDA GPU (bitsandbytes 4-bit); use lora on CPU"
            )
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=dtype,
            bnb_4bit_use_double_quant=True,
        )
        kwargs["device_map"] = {"": torch.cuda.current_device()}
    return AutoModelForCausalLM.from_pretrained(location, **kwargs)


def layer_index(name: str) -> int | None:
    """The transformer block number in a parameter name (…layers.N.… / …h.N.…), if any."""
    m = re.search(r"\.(?:layers|h|blocks)\.(\d+)\.", name)
    return int(m.group(1)) if m else None


def partial_trainable(
    names: list[str],
    modules: list[str] | None,
    top_layers: int | None,
    head: Collection[str] = (),
) -> set[str]:
    """Names that train under method=partial: matching a substring, or in the last N blocks
    and the output head (`head`: its parameter names)."""
    if not modules and not top_layers:
        raise BadInputError("method.type=partial needs trainable_modules or top_layers")
    chosen = {n for n in names if modules and any(m in n for m in modules)}
    if top_layers:
        indices = [i for i in (layer_index(n) for n in names) if i is not None]
        if not indices:
            raise BadInputError("method.top_layers: the model has no numbered layers")
        first = max(indices) + 1 - top_layers
        chosen |= {n for n in names if (layer_index(n) or -1) >= first}
        chosen |= set(head) & set(names)
    if not chosen:
        raise BadInputError(f"method.trainable_modules {modules}: matches no parameter")
    return chosen


def head_names(model: Any) -> set[str]:
    """Parameter names of the output head (lm_head). With tied embeddings the head is the
    input embedding matrix, which then appears under its embedding name."""
    head = model.get_output_embeddings()
    if head is None:
        return set()
    ids = {id(p) for p in head.parameters()}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def apply_method(model: Any, method: MethodConfig, seed: int, gradient_checkpointing: bool) -> Any:
    """Freeze/unfreeze for full and partial; wrap with LoRA/DoRA adapters for lora and qlora."""
    import torch

    if gradient_checkpointing:
        model.config.use_cache = False
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if method.type == "full":
        return model
    if method.type == "partial":
        names = [n for n, _ in model.named_parameters()]
        keep = partial_trainable(
            names, method.trainable_modules, method.top_layers, head=head_names(model)
        )
        for n, p in model.named_parameters():
            p.requires_grad_(n in keep)
        return model
    from peft import LoraConfig, get_peft_model

    if method.type == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=gradient_checkpointing
        )
    targets: str | list[str] = (
        "all-linear" if method.target_modules == ["all-linear"] else method.target_modules
    )
    lora = LoraConfig(
        r=method.lora_r,
        lora_alpha=method.lora_alpha,
        lora_dropout=method.lora_dropout,
        target_modules=targets,
        use_dora=method.use_dora,
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(seed)  # every rank must start from the same adapter weights
    if gradient_checkpointing:
        model.enable_input_require_grads()
    return get_peft_model(model, lora)


def unset_zero3_init() -> None:
    """Drop the global ZeRO-3 init hook so later from_pretrained calls are local, not collective."""
    try:
        from transformers.integrations.deepspeed import unset_hf_deepspeed_config
    except ImportError:
        return
    unset_hf_deepspeed_config()
