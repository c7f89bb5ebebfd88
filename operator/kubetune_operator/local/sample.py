"""A sample generation from the base and the fine-tuned model, side by side (local runs).

Run as its own process by `kubetune run` (python -m kubetune_operator.local.sample), so that only
machines with the trainer extra installed ever import torch; the operator never imports this.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Prompt:
    """The first usable record of the data, as a prompt to continue and what it should give."""

    expected: str | None
    text: str | None = None  # prompt-completion and text records
    messages: list[dict[str, str]] | None = None  # chat records, up to the first answer


def first_prompt(data: Path) -> Prompt:
    """The prompt of the first prompt-completion, chat, text or text preference record."""
    for line in data.read_text().splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        if "messages" in rec:
            msgs = rec["messages"]
            answer = next((i for i, m in enumerate(msgs) if m.get("role") == "assistant"), None)
            if answer is None:
                continue
            context = msgs[:answer]
            return Prompt(str(msgs[answer]["content"]), messages=context)
        if isinstance(rec.get("prompt"), str):  # prompt-completion, or a text preference pair
            expected = rec.get("completion", rec.get("chosen"))  # (its chosen answer)
            return Prompt(expected if isinstance(expected, str) else None, text=rec["prompt"])
        if "text" in rec:
            words = str(rec["text"]).split()
            prompt = " ".join(words[:2])
            return Prompt(" " + " ".join(words[2:]), text=prompt)
    raise ValueError(f"{data}: no prompt-completion, chat or text record")


def prompt_lines(prompt: Prompt) -> list[str]:
    """How the prompt reads to a person: the text, or one "role: content" line per turn."""
    if prompt.messages is None:
        return [f"prompt:     {prompt.text!r}"]
    return ["prompt (chat):", *(f"  {m['role']}: {m['content']}" for m in prompt.messages)]


def prompt_ids(tok: Any, prompt: Prompt) -> list[int]:
    """Token ids as training builds them: the chat template with the assistant's turn opened,
    or the bos token and the text."""
    if prompt.messages is not None:
        text = tok.apply_chat_template(prompt.messages, tokenize=False, add_generation_prompt=True)
        return list(tok(text, add_special_tokens=False)["input_ids"])
    ids = list(tok(prompt.text or "", add_special_tokens=False)["input_ids"])
    return [tok.bos_token_id, *ids] if tok.bos_token_id is not None else ids


def greedy(model_dir: Path, prompt: Prompt, max_new_tokens: int) -> str:
    """Greedy continuation of the prompt."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok: Any = AutoTokenizer.from_pretrained(model_dir)
    model: Any = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    ids = prompt_ids(tok, prompt)
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
    prompt = first_prompt(a.data)
    print(*prompt_lines(prompt), sep="\n")
    if prompt.expected is not None:
        print(f"expected:   {prompt.expected!r}")
    print(f"base:       {greedy(a.base, prompt, a.max_new_tokens)!r}")
    print(f"fine-tuned: {greedy(a.tuned, prompt, a.max_new_tokens)!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
