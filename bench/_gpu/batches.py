"""Batches: a deterministic stream of random records, padded (baseline) or packed (ours)."""

from __future__ import annotations

import random
from typing import Any

from bench._gpu.stats import lognormal_lengths


class Documents:
    """A deterministic stream of random-token records with log-normal lengths."""

    def __init__(self, vocab: int, seq: int, seed: int, smoke: bool) -> None:
        median = 400 if not smoke else 24
        self.lengths = lognormal_lengths(20000, median, 0.9, 8, seq, seed)
        self.vocab, self.seed, self.pos = vocab, seed, 0

    def take(self) -> list[int]:
        """The next record's token ids (labels are the ids: every token is learned)."""
        n = self.lengths[self.pos % len(self.lengths)]
        rng = random.Random(self.seed * 7919 + self.pos)
        self.pos += 1
        return [rng.randrange(3, self.vocab) for _ in range(n)]


def padded_batch(docs: list[list[int]], pad_id: int = 0) -> dict[str, Any]:
    """Records padded to the longest one, with attention_mask and ignored labels on padding."""
    import torch

    width = max(len(d) for d in docs)
    ids = [d + [pad_id] * (width - len(d)) for d in docs]
    mask = [[1] * len(d) + [0] * (width - len(d)) for d in docs]
    labels = [d + [-100] * (width - len(d)) for d in docs]
    return {
        "input_ids": torch.tensor(ids),
        "attention_mask": torch.tensor(mask),
        "labels": torch.tensor(labels),
    }


def packed_batch(docs: list[list[int]], length: int) -> dict[str, Any]:
    """Records packed into one row of `length` tokens with per-record positions, by the
    trainer's own packer and collator (kubetune_trainer.data)."""
    from kubetune_trainer import data

    rows = data.pack([data.Example(d, list(d)) for d in docs], length, pad_id=0)
    if len(rows) != 1:
        raise ValueError(f"{sum(map(len, docs))} tokens do not fit one row of {length}")
    return data.collate(rows)


def fill(docs: Documents, budget: int) -> list[list[int]]:
    """Whole records, in stream order, while they fit in `budget` tokens (at least one)."""
    out: list[list[int]] = []
    used = 0
    while True:
        n = docs.lengths[docs.pos % len(docs.lengths)]
        if out and used + n > budget:
            return out
        out.append(docs.take())
        used += n


def random_rows(rows: int, seq: int, vocab: int, seed: int) -> Any:
    """Random token rows from a seeded generator."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (rows, seq), generator=g)
