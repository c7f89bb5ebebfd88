"""A committed checkpoint as the Hugging Face output a job writes at its end, on CPU, without
the trainer's gang: `kubetune export CHECKPOINT_URI OUT`, and the job's own export of its best
checkpoint (output.select: best).

Every manifest records the trainer config, precision and base model of its job, so the model
is rebuilt exactly: the model source fetched again (an hf:// model at the commit the job used;
a LoRA adapter source with the base it names), the method applied,
the checkpoint's weights loaded (fp32 master weights, consolidated from the ZeRO shards by
DeepSpeed's own zero_to_fp32, cast to the training precision like the engine's copy), and the
same writer as the job's export produces merged and/or adapter safetensors, tokenizer, run card
and model card.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from . import adapter as adapter_mod
from . import export as export_mod
from . import hub
from . import model as model_mod
from .adapter import BaseRef
from .checkpoint.manager import download
from .checkpoint.manifest import Committed, committed, step_of
from .checkpoint.seal import Seal
from .config import ModelConfig, OutputConfig, StorageConfig, TrainerConfig
from .errors import BadInputError
from .model_card import write_model_card
from .redact import redacted_spec
from .storage import open_storage

log = logging.getLogger("kubetune_trainer")

DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def lineage(
    cfg: TrainerConfig, precision: str, model_commit: str | None, base: BaseRef, adapter: bool
) -> dict[str, Any]:
    """What each manifest records so its checkpoint can be exported without the job: the
    config, the precision, the base model (and its hub commit), and whether the model source
    was a LoRA adapter (continued or merged)."""
    return {
        "trainer_config": cfg.model_dump(mode="json"),
        "precision": precision,
        "model_commit": model_commit,
        "base": vars(base),
        "source_is_adapter": adapter,
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


def fetch(uri: str, storage: StorageConfig, dest: Path, seal: Seal) -> Committed:
    """Download a committed checkpoint of any job of the namespace (its manifest signed with
    seal's key) into dest/<tag>, every file checked against its signed sha256."""
    root, tag = split_uri(uri)
    store = open_storage(root, storage)
    good, skipped = committed(store, seal, any_job=True)
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


def pinned(cfg: ModelConfig, manifest: dict[str, Any]) -> ModelConfig:
    """The job's model source at the hub commit it trained on (an hf:// model; an adapter
    source pins its base through its own run card)."""
    commit = manifest.get("model_commit")
    if not commit or manifest.get("source_is_adapter") or not cfg.source.startswith("hf://"):
        return cfg
    ref = hub.parse(cfg.source, "model.source", dataset=False)
    source = "hf://" + "/".join(x for x in (ref.repo_id, ref.path) if x)
    return cfg.model_copy(update={"source": source, "revision": commit})


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


def rebuild(
    cfg: TrainerConfig,
    location: str,
    precision: str,
    weights: dict[str, Any],
    adapter_dir: str | None = None,
) -> Any:
    """The trained model on CPU: base + method (+ the source adapter) + the checkpoint's
    weights, in the training precision, as the engine held it.

    QLoRA's adapter is rebuilt on an unquantized base, which is how its merge is done anyway.
    """
    method = cfg.method
    if method.type == "qlora":
        method = method.model_copy(update={"type": "lora"})
    dtype = model_mod.torch_dtype(DTYPES[precision])
    read_as = model_mod.load_dtype(cfg.model.dtype, precision)
    model = model_mod.load_model(location, cfg.model, method, {}, dtype, read_as).to(dtype)
    model = model_mod.apply_method(model, method, cfg.training.seed, False, adapter_dir)
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
    module: Any,
    fmt: str,
    dest: Path,
    tokenizer: Any,
    location: str,
    base: BaseRef,
    card: dict[str, Any],
) -> list[str]:
    """Weights (merged and/or adapter), tokenizer, run card and model card, as a job writes
    them at its end; returns the folders written."""
    sd = module.state_dict()
    written = export_mod.save_model(module, sd, fmt, dest, tokenizer, location, {}, base)
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
        "spec": redacted_spec(cfg.spec),
        "model": {
            "source": cfg.model.source,
            "revision": cfg.model.revision,
            "commit": c.manifest.get("model_commit"),
            "dtype": cfg.model.dtype,
            "base": c.manifest.get("base"),
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
            "exported_step": c.step,
            "total_steps": cfg.training.max_steps,
            "trained_tokens": metrics.get("trained_tokens"),
        },
        "software": export_mod.software_versions(),
    }


def export_checkpoint(
    uri: str,
    out: str,
    work: Path,
    seal: Seal,
    fmt: str | None = None,
    storage: StorageConfig | None = None,
    out_storage: StorageConfig | None = None,
) -> dict[str, Any]:
    """`kubetune export`: the checkpoint at uri as the job's HF output at out; the run card."""
    c = fetch(uri, storage or StorageConfig(), work / "checkpoint", seal)
    cfg = recorded_config(c)
    fmt = fmt or (cfg.output.format if cfg.output else "merged")
    if fmt != "merged" and cfg.method.type not in ("lora", "qlora"):
        raise BadInputError(
            f"--format {fmt} needs a LoRA checkpoint; this one is {cfg.method.type}"
        )
    source = model_mod.fetch_source(pinned(cfg.model, c.manifest), work / "inputs")
    tokenizer = model_mod.load_tokenizer(
        adapter_mod.tokenizer_folder(source.adapter, source.location), {}
    )
    weights = checkpoint_weights(work / "checkpoint", c.tag, cfg.deepspeed.zero_stage)
    precision = c.manifest.get("precision", "fp32")
    module = rebuild(cfg, source.location, precision, weights, source.adapter)
    staging = export_mod.fresh_dir(work / "export")
    card = checkpoint_card(cfg, c, uri, out, fmt)
    write_hf(module, fmt, staging, tokenizer, source.location, source.base, card)
    export_mod.upload_dir(
        staging, out, OutputConfig(uri=out, storage=out_storage or StorageConfig())
    )
    return card
