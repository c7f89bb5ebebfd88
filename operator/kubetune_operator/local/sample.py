"""A sample generation from the base and the fine-tuned model, side by side (local runs).

Run as its own process by `kubetune run` (python -m kubetune_operator.local.sample), so that only
machines with the trainer extra installed ever import torch; the operator never imports this.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def first_prompt(data: Path) -> tuple[str, str | None]:
    """(prompt, expected answer) of the first prompt-completion, text or text preference record
    (the chosen answer is the expected one)."""
    for line in data.read_text().splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        if isinstance(rec.get("prompt"), str):
            expected = rec.get("completion", rec.get("chosen"))
            return rec["prompt"], expected if isinstance(expected, str) else None
        if "text" in rec:
            words = str(rec["text"]).split()
            return " ".join(words[:2]), " " + " ".join(words[2:])
    raise ValueError(f"{data}: no prompt-completion, text or text preference record")


def greedy(model_dir: Path, prompt: str, max_new_tokens: int) -> str:
    """Greedy continuation of prompt (the bos token first, as in training)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok: Any = AutoTokenizer.from_pretrained(model_dir)
    model: Any = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    if tok.bos_token_id is not None:
        ids = [tok.bos_token_id, *ids]
    with torch.no_grad():
        out = model.generate(
            torch.tensor([ids]),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
        )
    return str(tok.decode(out[0][len(ids) :], skip_special_tokens=True))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m kubetune_operator.local.sample", description=__doc__
    )
    p.add_argument("--base", required=True, type=Path, help="base model folder (HF layout)")
    p.add_argument("--tuned", required=True, type=Path, help="fine-tuned (merged) model folder")
    p.add_argument("--data", required=True, type=Path, help="JSONL the prompt is taken from")
    p.add_argument("--max-new-tokens", type=int, default=12)
    a = p.parse_args(argv)
    prompt, expected = first_prompt(a.data)
    print(f"prompt:     {prompt!r}")
    if expected is not None:
        print(f"expected:   {expected!r}")
    print(f"base:       {greedy(a.base, prompt, a.max_new_tokens)!r}")
    print(f"fine-tuned: {greedy(a.tuned, prompt, a.max_new_tokens)!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
