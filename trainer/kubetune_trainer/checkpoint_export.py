"""A committed checkpoint as the Hugging Face output a job writes at its end, on CPU, without
the trainer's gang: `kubetune export CHECKPOINT_URI OUT`, and the job's own export of its best
checkpoint (output.select: best).

Every manifest records the trainer config, precision and base-model commit of its job, so the
model is rebuilt exactly: the base fetched again (at the same hub commit), the method applied,
the checkpoint's weights loaded (fp32 master weights, consolidated from the ZeRO shards by
DeepSpeed's own zero_to_fp32, cast to the training precision like the engine's copy), and the
same writer as the job's export produces merged and/or adapter safetensors, tokenizer, run card
and model card.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from . import export as export_mod
from . import hub
from . import model as model_mod
from .checkpoint.manager import download
from .checkpoint.manifest import Committed, committed, step_of
from .checkpoint.storage import open_storage
from .config import OutputConfig, StorageConfig, TrainerConfig
from .errors import BadInputError
from .model_card import write_model_card

log = logging.getLogger("kubetune_trainer")

DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def lineage(cfg: TrainerConfig, precision: str, model_commit: str | None) -> dict[str, Any]:
    """What each manifest records so its checkpoint can be exported without the job."""
    return {
        "trainer_config": cfg.model_dump(mode="json"),
        "precision": precision,
        "model_commit": model_commit,
    }


def split_uri(uri: str) -> tuple[str, str]:
    """(store root, tag) of a checkpoint URI, <root>/step-NNNNNNNN."""
    root, _, tag = uri.rstrip("/").rpartition("/")
    if not root or step_of(tag) is None:
        raise BadInputError(
            f"{uri!r} is not a checkpoint URI: it ends in step-NNNNNNNN "
            "(status.checkpoints.committed lists them)"
        )
    return root, tag


def fetch(uri: str, storage: StorageConfig, dest: Path) -> Committed:
    """Download a committed checkpoint into dest/<tag>, every file checked against its sha256."""
    root, tag = split_uri(uri)
    store = open_storage(root, storage)
    good, skipped = committed(store)
    found = next((c for c in good if c.tag == tag), None)
    if found is None:
        why = "; ".join(skipped.get(tag, ["nothing there"]))
        raise BadInputError(f"{uri!r} is not a committed checkpoint: {why}")
    bad = download(store, found, dest / tag)
    if bad:
        raise BadInputError(f"{uri!r}: damaged in the store: {'; '.join(bad[:3])}")
    return found


def recorded_config(c: Committed) -> TrainerConfig:
    """The trainer config the checkpoint's job ran with."""
    raw = c.manifest.get("trainer_config")
    if raw is None:
        raise BadInputError(
            f"checkpoint {c.tag} records no trainer config (written by an older kubetune): "
            "it can only be resumed, not exported"
        )
    return TrainerConfig.model_validate(raw)


def pinned(source: str, commit: str | None) -> str:
    """The model source without its @revision when the job's resolved commit replaces it."""
    if not commit or not source.startswith("hf://"):
        return source
    ref = hub.parse(source, "model.source", dataset=False)
    return "hf://" + "/".join(x for x in (ref.repo_id, ref.path) if x)


def checkpoint_weights(root: Path, tag: str, zero_stage: int) -> dict[str, Any]:
    """The trained weights of a downloaded checkpoint, by parameter name (frozen ones, which
    the checkpoint leaves out, come from the base)."""
    import torch

    if zero_stage == 0:  # no ZeRO partitions: the module's own state dict
        states = torch.load(
            root / tag / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False
        )
        return dict(states["module"])
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    return dict(
        get_fp32_state_dict_from_zero_checkpoint(str(root), tag=tag, exclude_frozen_parameters=True)
    )


def rebuild(cfg: TrainerConfig, location: str, precision: str, weights: dict[str, Any]) -> Any:
    """The trained model on CPU: base + method + the checkpoint's weights.

    QLoRA's adapter is rebuilt on an unquantized base, which is how its merge is done anyway.
    """
    method = cfg.method
    if method.type == "qlora":
        method = method.model_copy(update={"type": "lora"})
    dtype = model_mod.torch_dtype(DTYPES[precision])
    model = model_mod.load_model(location, cfg.model, method, {}, dtype)
    model = model_mod.apply_method(model, method, cfg.training.seed, False)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    lost = sorted(trainable & set(missing))
    if unexpected or lost:
        raise RuntimeError(
            f"checkpoint weights do not fit the model (unexpected {unexpected[:3]}, "
            f"missing {lost[:3]})"
        )
    return model.eval()


def write_hf(
    module: Any, fmt: str, dest: Path, tokenizer: Any, location: str, card: dict[str, Any]
) -> list[str]:
    """Weights (merged and/or adapter), tokenizer, run card and model card, as a job writes
    them at its end; returns the folders written."""
    written = export_mod.save_model(module, module.state_dict(), fmt, dest, tokenizer, location, {})
    card["output"] = {**card.get("output", {}), "folders": written}
    export_mod.write_run_card(dest, card)
    write_model_card(dest, card)
    return written


def checkpoint_card(
    cfg: TrainerConfig, c: Committed, uri: str, out: str, fmt: str
) -> dict[str, Any]:
    """The run card of an export made from a checkpoint after the job."""
    metrics = c.manifest.get("metrics") or {}
    return {
        "job": cfg.job.model_dump(),
        "spec": cfg.spec,
        "model": {
            "source": cfg.model.source,
            "revision": cfg.model.revision,
            "commit": c.manifest.get("model_commit"),
            "dtype": cfg.model.dtype,
        },
        "method": cfg.method.model_dump(),
        "output": {"uri": out, "format": fmt},
        "export": {
            "step": c.step,
            "select": "checkpoint",
            "checkpoint": uri,
            "train_loss": metrics.get("train_loss"),
            "eval_loss": metrics.get("eval_loss"),
            "checkpoint_time": c.manifest.get("time"),
        },
        "training": {
            "steps": c.step,
            "total_steps": cfg.training.max_steps,
            "trained_tokens": metrics.get("trained_tokens"),
        },
        "software": export_mod.software_versions(),
    }


def export_checkpoint(
    uri: str,
    out: str,
    work: Path,
    fmt: str | None = None,
    storage: StorageConfig | None = None,
    out_storage: StorageConfig | None = None,
) -> dict[str, Any]:
    """`kubetune export`: the checkpoint at uri as the job's HF output at out; the run card."""
    c = fetch(uri, storage or StorageConfig(), work / "checkpoint")
    cfg = recorded_config(c)
    fmt = fmt or (cfg.output.format if cfg.output else "merged")
    if fmt != "merged" and cfg.method.type not in ("lora", "qlora"):
        raise BadInputError(
            f"--format {fmt} needs a LoRA checkpoint; this one is {cfg.method.type}"
        )
    commit = c.manifest.get("model_commit")
    location, _ = model_mod.fetch_resolved(
        pinned(cfg.model.source, commit),
        work / "inputs",
        commit or cfg.model.revision,
        cfg.model.storage,
    )
    tokenizer = model_mod.load_tokenizer(location, {})
    weights = checkpoint_weights(work / "checkpoint", c.tag, cfg.deepspeed.zero_stage)
    module = rebuild(cfg, location, c.manifest.get("precision", "fp32"), weights)
    staging = export_mod.fresh_dir(work / "export")
    card = checkpoint_card(cfg, c, uri, out, fmt)
    write_hf(module, fmt, staging, tokenizer, location, card)
    export_mod.upload_dir(
        staging, out, OutputConfig(uri=out, storage=out_storage or StorageConfig())
    )
    return card
