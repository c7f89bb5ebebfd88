"""Export the final model in HF layout (safetensors + config + tokenizer) and the run card."""

from __future__ import annotations

import json
import platform
import shutil
from pathlib import Path
from typing import Any

from .adapter import RUN_CARD, BaseRef, write_base
from .config import OutputConfig
from .storage import open_storage


def full_state_dict(engine: Any) -> dict[str, Any] | None:
    """The whole model's weights on rank 0 (None elsewhere); a collective under ZeRO-3."""
    import torch.distributed as dist

    if engine.zero_optimization_stage() == 3:
        sd = engine._zero3_consolidated_16bit_state_dict()
        return dict(sd) if dist.get_rank() == 0 and sd is not None else None
    if dist.get_rank() != 0:
        return None
    return {k: v.detach().clone() for k, v in engine.module.state_dict().items()}


def software_versions() -> dict[str, str]:
    """Versions of the libraries the run depended on."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in (
        "kubetune",
        "torch",
        "deepspeed",
        "transformers",
        "peft",
        "tokenizers",
        "safetensors",
    ):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return out


def save_merged_lora(
    base_location: str, extra: dict[str, Any], module: Any, sd: dict[str, Any], dest: Path
) -> None:
    """Fold the adapter into a fresh copy of the base and save it (rank 0, on CPU)."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from .model import unset_zero3_init

    unset_zero3_init()
    base = AutoModelForCausalLM.from_pretrained(
        base_location, dtype=module.base_model.model.dtype, **extra
    )
    peft_cfg = module.peft_config["default"]
    fresh = get_peft_model(base, peft_cfg)
    missing, unexpected = fresh.load_state_dict(sd, strict=False)
    if unexpected or [m for m in missing if "lora_" in m]:
        raise RuntimeError(
            f"merge: adapter weights did not match (unexpected {unexpected[:3]}, missing {missing[:3]})"
        )
    fresh.merge_and_unload().save_pretrained(dest, safe_serialization=True)


def save_model(
    module: Any,
    sd: dict[str, Any],
    fmt: str,
    dest: Path,
    tokenizer: Any,
    base_location: str,
    extra: dict[str, Any],
    base: BaseRef | None = None,
) -> list[str]:
    """Write merged and/or adapter folders under dest; returns the folders written.

    An adapter names `base` (the source the base model came from) in its adapter_config.json,
    so that a later job can continue it.
    """
    is_peft = hasattr(module, "peft_config")
    written = []
    if not is_peft:
        module.save_pretrained(dest, state_dict=sd, safe_serialization=True)
        written.append(".")
    else:
        if fmt in ("merged", "both"):
            save_merged_lora(base_location, extra, module, sd, dest)
            written.append(".")
        if fmt in ("adapter", "both"):
            adapter_dir = dest / "adapter" if fmt == "both" else dest
            module.save_pretrained(adapter_dir, state_dict=sd, safe_serialization=True)
            if base is not None:
                write_base(adapter_dir, base)
            written.append(str(adapter_dir.relative_to(dest)))
    for folder in written:
        tokenizer.save_pretrained(dest / folder)
    return written


def upload_dir(local: Path, uri: str, output: OutputConfig) -> None:
    """Copy a finished export to the output URI (file or s3)."""
    store = open_storage(uri, output.storage)
    for p in sorted(local.rglob("*")):
        if p.is_file():
            store.put_file(p, str(p.relative_to(local)))


def write_run_card(dest: Path, card: dict[str, Any]) -> Path:
    """The run card JSON next to the model."""
    path = dest / RUN_CARD
    path.write_text(json.dumps(card, indent=2, default=str))
    return path


def fresh_dir(path: Path) -> Path:
    """An empty folder."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path
