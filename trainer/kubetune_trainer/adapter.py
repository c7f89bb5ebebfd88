"""A model source that is a LoRA adapter (the adapter output of an earlier job): find its base,
then continue training the adapter (lora, qlora) or merge it into the base first (full, partial).

Continuing is what Axolotl's lora_model_dir, PEFT's is_trainable and managed fine-tuning APIs
do with an adapter: the adapter's shape (rank, alpha, target modules, DoRA) is its own, so a
spec that states a different one is refused rather than silently ignored; dropout is a training
setting and comes from the spec. The base is named in two places that kubetune writes alike at
export, for one job's output to be the next job's source: the run card next to the adapter
(model.base) and adapter_config.json (base_model_name_or_path and revision, which adapters
from other tools carry too). A hub base is pinned to the commit the first job trained on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import BadInputError

ADAPTER_CONFIG = "adapter_config.json"
RUN_CARD = "kubetune_run.json"
# spec.method.lora fields that fix an adapter's shape, and their adapter_config.json names.
SHAPE_FIELDS = {"r": "r", "alpha": "lora_alpha", "useDora": "use_dora", "targetModules": None}


@dataclass(frozen=True)
class BaseRef:
    """Where an adapter's base model is: a model source URI and its revision (hub commit)."""

    source: str
    revision: str | None


def is_adapter(folder: Path) -> bool:
    """An adapter folder: adapter_config.json and no model of its own (config.json)."""
    return (folder / ADAPTER_CONFIG).is_file() and not (folder / "config.json").is_file()


def name_for(base: BaseRef) -> str:
    """base_model_name_or_path for an exported adapter: the hub id of an hf:// base (as PEFT
    and transformers expect), the path of a file:// one, the URI of any other."""
    if base.source.startswith("hf://"):
        return base.source.removeprefix("hf://").split("@")[0]
    if base.source.startswith("file://"):
        return base.source.removeprefix("file://")
    return base.source


def source_for(name: str) -> str:
    """The model source URI that base_model_name_or_path names (the inverse of name_for)."""
    if "://" in name:
        return name
    if name.startswith("/"):
        return "file://" + name
    return "hf://" + name


def base_of(folder: Path, field: str = "spec.model.source") -> BaseRef:
    """The base of the adapter in `folder`: the run card's model.base, else adapter_config.json."""
    card = _read_json(folder / RUN_CARD)
    if card is not None:
        model = card.get("model") or {}
        base = model.get("base") or {
            "source": model.get("source"),
            "revision": model.get("commit") or model.get("revision"),
        }
        if base.get("source"):
            return BaseRef(str(base["source"]), base.get("revision"))
    conf = _read_json(folder / ADAPTER_CONFIG) or {}
    name = conf.get("base_model_name_or_path")
    if not name:
        raise BadInputError(
            f"{field}: the LoRA adapter there names no base model (no {RUN_CARD} and no "
            f"base_model_name_or_path in {ADAPTER_CONFIG})"
        )
    return BaseRef(source_for(str(name)), conf.get("revision"))


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise BadInputError(f"{path.name} of the model source is not JSON: {e}") from None
    return value if isinstance(value, dict) else None


def shape_conflicts(adapter_config: dict[str, Any], spec_lora: dict[str, Any]) -> list[str]:
    """spec.method.lora fields the user set that disagree with the adapter being continued."""
    problems = []
    for field, key in SHAPE_FIELDS.items():
        if field not in spec_lora:
            continue
        wanted = spec_lora[field]
        if field == "targetModules":
            have = adapter_config.get("target_modules") or []
            if wanted == ["all-linear"] or {_leaf(m) for m in wanted} <= {_leaf(m) for m in have}:
                continue
        else:
            assert key is not None
            have = adapter_config.get(key)
            if have == wanted:
                continue
        problems.append(f"spec.method.lora.{field} is {wanted!r} but the adapter has {have!r}")
    return problems


def _leaf(module: str) -> str:
    return module.rsplit(".", 1)[-1]


def check_shape(folder: Path, spec: dict[str, Any]) -> None:
    """Refuse a spec whose LoRA settings contradict the adapter it continues."""
    lora = ((spec.get("method") or {}).get("lora")) or {}
    problems = shape_conflicts(_read_json(folder / ADAPTER_CONFIG) or {}, lora)
    if problems:
        raise BadInputError(
            "spec.model.source is a LoRA adapter, which keeps its own shape when training "
            "continues: " + "; ".join(problems) + " (leave those fields out, or match them)"
        )


def tokenizer_folder(adapter_dir: str | None, base_location: str) -> str:
    """Where the tokenizer comes from: the adapter's own (exported with it), else the base's."""
    if adapter_dir is not None and (Path(adapter_dir) / "tokenizer_config.json").is_file():
        return adapter_dir
    return base_location


def continue_training(model: Any, folder: Path, dropout: float) -> Any:
    """The base wrapped with the adapter's weights, trainable, with the job's dropout."""
    from peft import PeftConfig, PeftModel

    config = PeftConfig.from_pretrained(str(folder))
    config.lora_dropout = dropout
    config.inference_mode = False
    return PeftModel.from_pretrained(model, str(folder), is_trainable=True, config=config)


def merge_into(model: Any, folder: Path) -> Any:
    """The base with the adapter folded into its weights: a plain model again, all of it
    trainable (loading the adapter froze the base)."""
    from peft import PeftModel

    merged = PeftModel.from_pretrained(model, str(folder)).merge_and_unload()
    for p in merged.parameters():
        p.requires_grad_(True)
    return merged


def write_base(adapter_dir: Path, base: BaseRef) -> None:
    """Name the base in an exported adapter_config.json, resolvable by the next job."""
    path = adapter_dir / ADAPTER_CONFIG
    conf = json.loads(path.read_text())
    conf["base_model_name_or_path"] = name_for(base)
    conf["revision"] = base.revision
    path.write_text(json.dumps(conf, indent=2, sort_keys=True) + "\n")
