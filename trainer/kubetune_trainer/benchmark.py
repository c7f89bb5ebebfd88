"""A fixed benchmark set scored on the weights a run starts from and on the ones it exports.

The two scores come from the same process, tokenizer and code, so they differ only by the
training in between: a FineTuneSchedule's quality gate promotes a run's model only if its
"after" is not worse than its "before" (the promoted model it continued). Records are scored
one per sequence, unpacked, so each one can be judged whole.

Exact match needs no generation: greedy decoding reproduces a completion exactly if and only if,
with the true prefix fed in, the most likely next token is the right one at every completion
position (end of sequence included, which is where decoding stops). One forward pass per
record therefore gives it, under any ZeRO stage, like the eval loss.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import data as data_mod
from .config import BenchmarkConfig, DataConfig


@dataclass
class Benchmark:
    """Benchmark records as one padded sequence each, and what they are."""

    uri: str
    sha256: str
    examples: list[data_mod.Example]
    exact_match: bool

    def identity(self) -> dict[str, Any]:
        """uri, sha256 and record count, as status.benchmark spells them."""
        return {"uri": self.uri, "sha256": self.sha256, "records": len(self.examples)}


def digest(sources: list[data_mod.SourceInfo]) -> str:
    """One checksum for the benchmark: its file's sha256, or the sha256 of its files' ones."""
    if len(sources) == 1:
        return sources[0].sha256
    return hashlib.sha256("".join(s.sha256 for s in sources).encode()).hexdigest()


def load(tok: Any, cfg: BenchmarkConfig, data: DataConfig, cache: Path) -> Benchmark:
    """Read, check and tokenize the benchmark records (the data's format and store)."""
    records, sources = data_mod.load_split(
        cfg.uri, cache, data.storage, "validation", field="spec.benchmark.uri"
    )
    fmt = data_mod.detect_format(records[0]) if data.format == "auto" else data.format
    unpacked = data.model_copy(update={"packing": False})
    return Benchmark(
        cfg.uri,
        digest(sources),
        data_mod.to_sequences(tok, records, fmt, unpacked),
        cfg.exact_match,
    )


def score(
    engine: Any,
    bench: Benchmark,
    micro: int,
    rank: int,
    world: int,
    all_sum: Callable[[list[float]], list[float]],
) -> dict[str, float]:
    """{"evalLoss": token-weighted loss, "exactMatch": share of records fully right} over all
    ranks (each rank scores every world-th record; all make the same number of forwards)."""
    import torch

    examples = bench.examples
    mine = list(range(rank, len(examples), world))
    batches = math.ceil(math.ceil(len(examples) / world) / micro)
    loss = tokens = right = records = 0.0
    was_training = engine.training
    engine.eval()
    with torch.no_grad():
        for b in range(batches):
            idx = mine[b * micro : (b + 1) * micro]
            weight = 1.0 if idx else 0.0
            batch = data_mod.collate([examples[i] for i in (idx or [0])])
            ids = batch["input_ids"].to(engine.device)
            labels = batch["labels"].to(engine.device)[:, 1:]
            logits = engine(input_ids=ids).logits.float()[:, :-1]
            mask = labels != data_mod.IGNORE
            loss += weight * float(
                torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.size(-1)),
                    labels.reshape(-1),
                    ignore_index=data_mod.IGNORE,
                    reduction="sum",
                )
            )
            tokens += weight * float(mask.sum())
            correct = (logits.argmax(-1) == labels) | ~mask
            right += weight * float(correct.all(dim=1).sum())
            records += weight * len(idx)
    if was_training:
        engine.train()
    loss, tokens, right, records = all_sum([loss, tokens, right, records])
    out: dict[str, float] = {}
    if tokens:
        out["evalLoss"] = round(loss / tokens, 6)
    if bench.exact_match and records:
        out["exactMatch"] = round(right / records, 6)
    return out
