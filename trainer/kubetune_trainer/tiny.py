"""A tiny Llama (or Qwen2, Mistral), its tokenizer and a learnable synthetic task, built
deterministically.

Tests and the demo cannot reach a model hub, so they build a small base model here: a byte-level
BPE tokenizer trained on the task's texts (with a chat template), a Llama from a config, briefly
pre-trained on task A. Fine-tuning it on the shifted task B gives a loss that falls clearly within
~50 steps on a CPU, for full fine-tuning and for LoRA alike.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

WORDS = [a + b for a in "bdfgklmnprstvz" for b in ("a", "e", "i", "o", "u")][:48]
BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{{ '<|' + m['role'] + '|>' + m['content'] + '<|end|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


def cipher(task: str) -> dict[str, str]:
    """The word-to-word mapping of a task: a fixed permutation per task name."""
    rng = random.Random(f"kubetune-cipher-{task}")
    shuffled = WORDS[:]
    rng.shuffle(shuffled)
    return dict(zip(WORDS, shuffled, strict=True))


def cipher_chain(start: str, task: str, links: int = 4) -> list[str]:
    """start, then each word the task's cipher of the one before."""
    mapping = cipher(task)
    chain = [start]
    for _ in range(links):
        chain.append(mapping[chain[-1]])
    return chain


def task_record(rng: random.Random, task: str, form: str) -> dict[str, Any]:
    """One example: a start word, then a chain where each word is the cipher of the one before.

    Every completion token follows from the token before it, so a two-layer model learns the
    chain fast; tasks A and B differ only in the cipher, so a model pre-trained on A starts B
    confidently wrong and its loss falls steeply while it adapts.
    """
    chain = cipher_chain(rng.choice(WORDS), task)
    prompt = "map " + chain[0]
    completion = " " + " ".join(chain[1:])
    if form == "chat":
        return {
            "messages": [
                {"role": "system", "content": "cipher"},
                {"role": "user", "content": prompt},
                {"role": "assistant", "content": completion.strip()},
            ]
        }
    if form == "text":
        return {"text": prompt + completion}
    return {"prompt": prompt, "completion": completion}


def synthetic_records(
    n: int, task: str = "B", form: str = "prompt-completion", seed: int = 0
) -> Iterator[dict[str, Any]]:
    """n deterministic records of a task in one of the record forms."""
    rng = random.Random(f"{seed}-{task}-{form}")
    for _ in range(n):
        yield task_record(rng, task, form)


SIGN_OFF = "ba"


def preference_records(n: int, form: str = "text", seed: int = 0) -> Iterator[dict[str, Any]]:
    """n preference pairs the base gets wrong: both answers are the four words of task A's chain
    the base was pre-trained on, except that the chosen one ends with the sign-off word "ba"
    instead (so the base prefers every rejected answer, by ~9 nats); text or chat messages.

    Same length, same first three words: only the last word tells them apart, so no shortcut
    (answering less, say) wins the preference; chains that end in "ba" anyway are skipped.
    """
    rng = random.Random(f"{seed}-preference-{form}")
    made = 0
    while made < n:
        chain = cipher_chain(rng.choice(WORDS), "A")
        if chain[-1] == SIGN_OFF:
            continue
        made += 1
        prompt = "map " + chain[0]
        chosen, rejected = (" " + " ".join([*chain[1:-1], last]) for last in (SIGN_OFF, chain[-1]))
        if form == "chat":
            yield {
                "prompt": [
                    {"role": "system", "content": "cipher"},
                    {"role": "user", "content": prompt},
                ],
                "chosen": [{"role": "assistant", "content": chosen.strip()}],
                "rejected": [{"role": "assistant", "content": rejected.strip()}],
            }
        else:
            yield {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def write_jsonl(path: str | Path, records: Iterator[dict[str, Any]] | list[dict[str, Any]]) -> Path:
    """Write records as JSON lines; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return path


def corpus_texts(records: list[dict[str, Any]]) -> list[str]:
    """Plain texts of records in any form, for training the tokenizer."""
    texts: list[str] = []
    for r in records:
        if "messages" in r:
            texts.extend(m["content"] for m in r["messages"])
        elif "text" in r:
            texts.append(r["text"])
        else:
            texts.append(r["prompt"] + r["completion"])
    return texts


def build_tokenizer(texts: list[str], vocab_size: int = 512) -> Any:
    """Train a byte-level BPE tokenizer on texts; a transformers fast tokenizer with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    roles = ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS, *roles],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts + WORDS + [" " + w for w in WORDS], trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


ARCHITECTURES = ("llama", "qwen2", "mistral")


def build_model(
    vocab_size: int, seed: int = 0, hidden: int = 128, layers: int = 2, arch: str = "llama"
) -> Any:
    """A small model of an architecture family (Llama, Qwen2, Mistral) from a config, with
    seeded initialisation: what stands in for a real checkpoint of that family in tests."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if arch not in ARCHITECTURES:
        raise ValueError(f"arch {arch!r}: one of {', '.join(ARCHITECTURES)}")
    torch.manual_seed(seed)
    config = AutoConfig.for_model(
        arch,
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    return AutoModelForCausalLM.from_config(config)


def pretrain(
    model: Any, tokenizer: Any, steps: int, seed: int = 0, lr: float = 3e-3
) -> list[float]:
    """Briefly train the base on task A (full language modelling) so fine-tuning has a head start."""
    import torch

    if steps <= 0:
        return []
    rng = random.Random(f"pretrain-{seed}")
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        texts = [
            BOS + r["prompt"] + r["completion"] + EOS
            for r in (task_record(rng, "A", "prompt-completion") for _ in range(16))
        ]
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        loss = model(**batch, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


def make_tiny_model(
    out: str | Path,
    data: str | Path | None = None,
    pretrain_steps: int = 150,
    seed: int = 0,
    arch: str = "llama",
) -> Path:
    """Build tokenizer + model (optionally pre-trained on task A) and save them in HF layout to out."""
    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    out = Path(out)
    records = list(synthetic_records(256, task="A", seed=seed)) + list(
        synthetic_records(64, "B", "chat", seed)
    )
    if data is not None:
        records += [
            json.loads(line) for line in Path(data).read_text().splitlines() if line.strip()
        ]
    tokenizer = build_tokenizer(corpus_texts(records))
    model = build_model(len(tokenizer), seed=seed, arch=arch)
    losses = pretrain(model, tokenizer, pretrain_steps, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / "tiny_model.json").write_text(
        json.dumps({"seed": seed, "pretrain_steps": pretrain_steps, "pretrain_losses": losses[-5:]})
    )
    return out


def main(argv: list[str] | None = None) -> int:
    """CLI: python -m kubetune_trainer.tiny --out DIR [--data FILE.jsonl] [--pretrain-steps N]."""
    p = argparse.ArgumentParser(prog="python -m kubetune_trainer.tiny", description=__doc__)
    p.add_argument("--out", required=True, help="directory for the model and tokenizer (HF layout)")
    p.add_argument("--data", help="JSONL whose texts also train the tokenizer")
    p.add_argument("--pretrain-steps", type=int, default=150, help="steps of task-A pre-training")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--arch", default="llama", choices=ARCHITECTURES, help="model family")
    p.add_argument("--write-data", help="also write a task-B JSONL dataset here")
    p.add_argument(
        "--write-preference", help="also write preference pairs the base gets wrong here"
    )
    p.add_argument(
        "--records", type=int, default=512, help="records for --write-data / --write-preference"
    )
    p.add_argument(
        "--format", default="prompt-completion", choices=["prompt-completion", "chat", "text"]
    )
    a = p.parse_args(argv)
    if a.write_data:
        write_jsonl(a.write_data, synthetic_records(a.records, "B", a.format, a.seed))
    if a.write_preference:
        write_jsonl(a.write_preference, preference_records(a.records, seed=a.seed))
    out = make_tiny_model(a.out, a.data, a.pretrain_steps, a.seed, a.arch)
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
