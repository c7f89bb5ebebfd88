"""Fetch the base model and tokenizer from their source, load them, and apply the method."""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlparse

from . import adapter, hub
from .adapter import BaseRef
from .config import MethodConfig, ModelConfig, StorageConfig
from .errors import BadInputError
from .storage import download, local_path


@dataclass(frozen=True)
class Fetched:
    """The model source on local disk: the base model's folder and, when the source is a LoRA
    adapter, the adapter's folder too (see adapter.py)."""

    location: str
    commit: str | None  # hub commit of the base, for hf:// bases
    base: BaseRef  # the base model as a source URI and revision, for the run card and export
    adapter: str | None = None


def fetch(
    source: str, cache_dir: Path, revision: str | None = None, storage: StorageConfig | None = None
) -> str:
    """A local directory holding the model (see fetch_resolved)."""
    return fetch_resolved(source, cache_dir, revision, storage)[0]


def fetch_source(cfg: ModelConfig, cache_dir: Path) -> Fetched:
    """The model source, and the base it needs when it is a LoRA adapter.

    The base is found where adapter.base_of says and read from the same store as the adapter
    (spec.model's endpoint and credentials).
    """
    folder, commit = fetch_folder(cfg.source, cache_dir, cfg.revision, cfg.storage)
    if not adapter.is_adapter(Path(folder)):
        model_folder(folder, cfg.source, commit)
        return Fetched(folder, commit, BaseRef(cfg.source, commit or cfg.revision))
    base = adapter.base_of(Path(folder))
    try:
        location, base_commit = fetch_resolved(
            base.source, cache_dir / "base", base.revision, cfg.storage
        )
    except BadInputError as e:
        raise BadInputError(
            f"spec.model.source {cfg.source!r} is a LoRA adapter whose base model "
            f"{base.source!r} could not be read: {e}"
        ) from None
    return Fetched(
        location,
        base_commit,
        BaseRef(base.source, base_commit or base.revision),
        adapter=folder,
    )


def fetch_resolved(
    source: str, cache_dir: Path, revision: str | None = None, storage: StorageConfig | None = None
) -> tuple[str, str | None]:
    """A local directory holding a model (config.json), and its hub commit (hf:// only)."""
    folder, commit = fetch_folder(source, cache_dir, revision, storage)
    return model_folder(folder, source, commit), commit


def model_folder(folder: str, source: str, commit: str | None) -> str:
    """folder, if it holds a model (config.json); else bad input naming the source."""
    if not Path(folder, "config.json").is_file():
        where = f"at commit {commit}" if commit else f"in {folder}"
        raise BadInputError(f"model.source {source!r}: no config.json {where}")
    return folder


def fetch_folder(
    source: str, cache_dir: Path, revision: str | None = None, storage: StorageConfig | None = None
) -> tuple[str, str | None]:
    """The local folder a model source names, and the hub commit it came from (hf:// only).

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
        snap = hub.download(
            ref, rev, "model", "model.source", (storage or StorageConfig()).endpoint
        )
        folder = snap.local / ref.path if ref.path else snap.local
        return str(folder), snap.commit
    return local_path(source), None


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


# The 16-bit training precision each 16-bit dtype belongs to, and back.
HALF_PRECISION = {"bfloat16": "bf16", "float16": "fp16"}
PRECISION_DTYPE = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def load_dtype(dtype: str, precision: str) -> str:
    """The dtype the weights are read in: spec.model.dtype, checked against the resolved
    training precision (the engine casts the weights to that precision afterwards).

    auto reads them as stored and float32 loses nothing, so both fit any precision; a 16-bit
    dtype fits only its own 16-bit precision: read in one format and trained in another (or
    in fp32), the weights would be rounded for nothing.
    """
    if dtype not in ("auto", "float32") and HALF_PRECISION[dtype] != precision:
        _refuse_dtype(dtype, precision)
    return dtype


def _refuse_dtype(dtype: str, precision: str) -> NoReturn:
    fitting = " or ".join(dict.fromkeys(["auto", "float32", PRECISION_DTYPE[precision]]))
    raise BadInputError(
        f"spec.model.dtype {dtype} contradicts spec.training.precision, which is {precision} "
        f"on these workers: the weights would be rounded to {dtype} and then trained in "
        f"{precision}; set spec.model.dtype to {fitting}, or spec.training.precision to "
        f"{HALF_PRECISION[dtype]}"
    )


def load_tokenizer(location: str, extra: dict[str, Any]) -> Any:
    """The tokenizer shipped with the model; a pad token is added if missing (eos reused)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(location, **extra)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(
    location: str,
    cfg: ModelConfig,
    method: MethodConfig,
    extra: dict[str, Any],
    dtype: Any,
    read_as: str = "auto",
) -> Any:
    """The causal LM read in `read_as` (load_dtype) for training in `dtype`: fp32 training
    casts here, bf16/fp16 in DeepSpeed; QLoRA loads 4-bit weights that compute in dtype (GPU
    only)."""
    import torch
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {
        "dtype": torch_dtype(read_as),
        "trust_remote_code": cfg.trust_remote_code,
        **extra,
    }
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
    model = AutoModelForCausalLM.from_pretrained(location, **kwargs)
    if dtype == torch.float32 and model.dtype != torch.float32:
        model = model.float()  # DeepSpeed casts to bf16/fp16 itself, never up to fp32
    return model


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


def apply_method(
    model: Any,
    method: MethodConfig,
    seed: int,
    gradient_checkpointing: bool,
    adapter_dir: str | None = None,
) -> Any:
    """Freeze/unfreeze for full and partial; wrap with LoRA/DoRA adapters for lora and qlora.

    With adapter_dir (the source was a LoRA adapter), lora and qlora continue training that
    adapter; full and partial train the base with the adapter merged in.
    """
    import torch

    if adapter_dir is not None and method.type in ("full", "partial"):
        model = adapter.merge_into(model, Path(adapter_dir))
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
    if gradient_checkpointing:
        model.enable_input_require_grads()
    if adapter_dir is not None:
        return adapter.continue_training(model, Path(adapter_dir), method.lora_dropout)
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
    return get_peft_model(model, lora)


def unset_zero3_init() -> None:
    """Drop the global ZeRO-3 init hook so later from_pretrained calls are local, not collective."""
    try:
        from transformers.integrations.deepspeed import unset_hf_deepspeed_config
    except ImportError:
        return
    unset_hf_deepspeed_config()
