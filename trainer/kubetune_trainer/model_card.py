"""The model card (README.md) of an export, written from its run card.

What a hub or a registry shows first: the base model, the method, the data and the results,
with YAML metadata the Hugging Face Hub reads (base_model, library_name, tags). The run card
(kubetune_run.json) beside it holds everything else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

MODEL_CARD = "README.md"


def hub_base_model(source: str) -> str | None:
    """The hub repo id of an hf:// base model (what `base_model` names), else None."""
    if not source.startswith("hf://"):
        return None
    org, _, rest = source.removeprefix("hf://").partition("/")
    return f"{org}/{rest.split('/')[0].split('@')[0]}"


def metadata(card: dict[str, Any]) -> dict[str, Any]:
    """The YAML front matter."""
    method = (card.get("method") or {}).get("type", "full")
    adapter_only = (card.get("output") or {}).get("format") == "adapter"
    meta: dict[str, Any] = {
        "library_name": "peft" if adapter_only else "transformers",
        "tags": ["kubetune", f"fine-tune-{method}"],
    }
    base = hub_base_model((card.get("model") or {}).get("source", ""))
    if base:
        meta["base_model"] = base
    return meta


def _num(x: Any) -> str:
    return f"{x:.4f}" if isinstance(x, float) else ("-" if x is None else str(x))


def render(card: dict[str, Any]) -> str:
    """README.md text for a run card."""
    job, model = card.get("job") or {}, card.get("model") or {}
    training, export = card.get("training") or {}, card.get("export") or {}
    sources = (card.get("data") or {}).get("sources") or []
    evals = training.get("evals") or []
    lines = [
        "---",
        yaml.safe_dump(metadata(card), sort_keys=True).strip(),
        "---",
        "",
        f"# {job.get('name', 'fine-tuned model')}",
        "",
        f"Fine-tuned from `{model.get('source')}`"
        + (f" (commit `{model['commit']}`)" if model.get("commit") else "")
        + f" with kubetune, method `{(card.get('method') or {}).get('type')}`.",
        "",
        "| | |",
        "|---|---|",
        f"| exported step | {_num(export.get('step', training.get('steps')))} "
        f"({export.get('select', 'last')}) |",
        f"| eval loss at that step | {_num(export.get('eval_loss'))} |",
        f"| eval loss before training | {_num(evals[0][1] if evals else None)} |",
        f"| steps trained | {_num(training.get('steps'))} of {_num(training.get('total_steps'))} |",
        f"| training tokens | {_num(training.get('trained_tokens'))} |",
        "",
        "Data: "
        + (", ".join(f"`{s.get('uri')}` ({s.get('records')} records)" for s in sources) or "-"),
        "",
        "The full lineage (spec, software versions, losses, checkpoints) is in `kubetune_run.json`.",
        "",
    ]
    return "\n".join(lines)


def write_model_card(dest: Path, card: dict[str, Any]) -> Path:
    """README.md next to the model."""
    path = dest / MODEL_CARD
    path.write_text(render(card))
    return path
