"""Training data: read jsonl/parquet, detect the record format, tokenize with loss masks, pack,
split off validation, and hand each rank its deterministic micro-batches.

Formats: prompt-completion (loss on completion tokens only), chat (messages rendered with the
tokenizer's chat template, loss on assistant turns only), text (loss on every token), preference
({prompt, chosen, rejected} as text or chat messages: one Example per pair, for objective dpo).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from . import hub
from .config import DataConfig, StorageConfig
from .errors import BadInputError
from .storage import download, local_path, sha256_file

IGNORE = -100


@dataclass
class Record:
    """One input record and where it came from (file:line), for error messages."""

    data: dict[str, Any]
    where: str


@dataclass
class Example:
    """Token ids and labels (IGNORE where no loss is taken)."""

    ids: list[int]
    labels: list[int]
    positions: list[int] | None = None  # packed rows: restart at 0 for every record
    chosen_length: int | None = None  # a preference pair: chosen sequence, then rejected from here


@dataclass
class SourceInfo:
    """Lineage of one data file for the run card."""

    uri: str
    sha256: str
    records: int
    commit: str | None = None  # hub commit, for hf:// data


@dataclass
class Dataset:
    """Tokenized train/validation sequences and their lineage."""

    train: list[Example]
    validation: list[Example]
    format: str
    sources: list[SourceInfo] = field(default_factory=list)


def resolve_files(
    uri: str,
    cache_dir: Path,
    storage: StorageConfig | None = None,
    field: str = "spec.dataset.train",
) -> list[Path]:
    """Local .jsonl/.parquet files for a URI (a file or folder; s3:// ones are downloaded)."""
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        root = cache_dir / "data" / parsed.netloc / parsed.path.strip("/")
        path = download(uri, field, storage or StorageConfig(), root)
    else:
        path = Path(local_path(uri))
    return data_files(path, uri)


SPLIT_NAMES = {"train": ("train",), "validation": ("validation", "valid", "val", "dev", "test")}


def split_files(files: list[Path], split: str) -> list[Path]:
    """Files a Hub dataset repo names for a split (train-*.parquet, test.jsonl, ...), else all."""
    chosen = [f for f in files if f.name.lower().startswith(SPLIT_NAMES[split])]
    return chosen or files


def hub_files(uri: str, split: str, endpoint: str | None = None) -> tuple[list[Path], str]:
    """Data files of an hf:// dataset repo (or a file/folder in it) and the commit they are at.

    A whole repo gives the files named for the split when it has any (the Hub's convention).
    """
    ref = hub.parse(uri, "dataset", dataset=True)
    snap = hub.download(ref, ref.revision, "dataset", f"dataset {uri!r}", endpoint)
    if ref.path:
        return data_files(snap.local / ref.path, uri), snap.commit
    return split_files(data_files(snap.local, uri), split), snap.commit


def data_files(path: Path, uri: str) -> list[Path]:
    """path itself if a file, else the .jsonl/.json/.parquet files under it, sorted."""
    if path.is_file():
        return [path]
    files = (
        sorted(p for p in path.rglob("*") if p.suffix in (".jsonl", ".json", ".parquet"))
        if path.is_dir()
        else []
    )
    if not files:
        raise BadInputError(f"data {uri!r}: no .jsonl or .parquet files found")
    return files


def read_records(path: Path) -> list[Record]:
    """Records of one file; a line that is not a JSON object is an error naming file:line."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
        return [Record(r, f"{path}:row {i + 1}") for i, r in enumerate(rows)]
    out = []
    with path.open() as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as e:
                raise BadInputError(f"{path}:{n}: not valid JSON ({e.msg})") from None
            if not isinstance(data, dict):
                raise BadInputError(
                    f"{path}:{n}: expected a JSON object, got {type(data).__name__}"
                )
            out.append(Record(data, f"{path}:{n}"))
    return out


def detect_format(record: Record) -> str:
    """The format a record's keys imply."""
    keys = record.data.keys()
    if "chosen" in keys and "rejected" in keys:
        return "preference"
    if "messages" in keys:
        return "chat"
    if "prompt" in keys and "completion" in keys:
        return "prompt-completion"
    if "text" in keys:
        return "text"
    raise BadInputError(
        f"{record.where}: cannot tell the format from keys {sorted(keys)}; "
        "expected 'messages', 'prompt'+'completion', 'text' or 'prompt'+'chosen'+'rejected'"
    )


def check_record(record: Record, fmt: str) -> None:
    """Raise a BadInputError naming file:line and field when a record does not fit its format."""
    d, where = record.data, record.where
    if fmt == "text":
        if not isinstance(d.get("text"), str):
            raise BadInputError(f"{where}: field 'text' must be a string")
    elif fmt == "prompt-completion":
        for k in ("prompt", "completion"):
            if not isinstance(d.get(k), str):
                raise BadInputError(f"{where}: field {k!r} must be a string")
    elif fmt == "preference":
        check_preference(record)
    else:
        check_messages(d.get("messages"), where, "messages")
        if not any(m["role"] == "assistant" for m in d["messages"]):
            raise BadInputError(f"{where}: messages has no assistant turn to learn from")


def check_messages(msgs: Any, where: str, name: str) -> None:
    """A non-empty list of {role, content} strings, or a BadInputError naming the entry."""
    if not isinstance(msgs, list) or not msgs:
        raise BadInputError(f"{where}: field {name!r} must be a non-empty list")
    for i, m in enumerate(msgs):
        if (
            not isinstance(m, dict)
            or not isinstance(m.get("role"), str)
            or not isinstance(m.get("content"), str)
        ):
            raise BadInputError(f"{where}: {name}[{i}] needs string 'role' and 'content'")


def check_preference(record: Record) -> None:
    """prompt, chosen and rejected all text, or a message-list prompt with message-list (or text)
    responses; a BadInputError names file:line and the field otherwise."""
    d, where = record.data, record.where
    prompt = d.get("prompt")
    if isinstance(prompt, list):
        check_messages(prompt, where, "prompt")
        for k in ("chosen", "rejected"):
            if not isinstance(d.get(k), str):
                check_messages(d.get(k), where, k)
        return
    if not isinstance(prompt, str):
        raise BadInputError(f"{where}: field 'prompt' must be a string or a list of messages")
    for k in ("chosen", "rejected"):
        if not isinstance(d.get(k), str):
            raise BadInputError(f"{where}: field {k!r} must be a string, as the prompt is")


def encode_text(tok: Any, text: str) -> list[int]:
    """Token ids of text without special tokens."""
    return list(tok(text, add_special_tokens=False)["input_ids"])


def bos(tok: Any) -> list[int]:
    """[bos_token_id] where the tokenizer has one."""
    return [tok.bos_token_id] if tok.bos_token_id is not None else []


def render_chat(tok: Any, messages: list[dict[str, str]], generation_prompt: bool) -> list[int]:
    """Token ids of messages rendered by the tokenizer's chat template."""
    text = tok.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=generation_prompt
    )
    return encode_text(tok, text)


def tokenize_chat(tok: Any, messages: list[dict[str, str]]) -> Example:
    """Chat ids with labels only on assistant turns, found by rendering growing prefixes."""
    ids: list[int] = []
    labels: list[int] = []
    for i, m in enumerate(messages):
        if m["role"] == "assistant":
            prompt = render_chat(tok, messages[:i], generation_prompt=True)
            full = render_chat(tok, messages[: i + 1], generation_prompt=False)
            new_prompt = prompt[len(ids) :]
            ids += new_prompt
            labels += [IGNORE] * len(new_prompt)
            answer = full[len(ids) :]
            ids += answer
            labels += answer
    tail = render_chat(tok, messages, generation_prompt=False)[len(ids) :]
    ids += tail
    labels += [IGNORE] * len(tail)
    return Example(ids, labels)


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading ids a and b share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def as_messages(response: str | list[dict[str, str]]) -> list[dict[str, str]]:
    """A chat response: its messages, or text as one assistant turn."""
    return [{"role": "assistant", "content": response}] if isinstance(response, str) else response


def tokenize_pair(tok: Any, record: Record) -> tuple[list[int], list[int], list[int]]:
    """(prompt, chosen response, rejected response) ids of a preference record.

    Text: the bos token and the prompt, each response closed by eos (as prompt-completion).
    Chat: the prompt rendered with the generation prompt, each response as the rest of the
    rendered conversation; where the template renders the prompt differently inside the whole
    conversation, the responses start where the renderings part (as TRL does).
    """
    d = record.data
    if isinstance(d["prompt"], str):
        eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
        prompt = bos(tok) + encode_text(tok, d["prompt"])
        return prompt, encode_text(tok, d["chosen"]) + eos, encode_text(tok, d["rejected"]) + eos
    require_chat_template(tok, record)
    prompt = render_chat(tok, d["prompt"], generation_prompt=True)
    chosen, rejected = (
        render_chat(tok, d["prompt"] + as_messages(d[k]), generation_prompt=False)
        for k in ("chosen", "rejected")
    )
    start = min(common_prefix(prompt, chosen), common_prefix(prompt, rejected))
    return prompt[:start], chosen[start:], rejected[start:]


def pair_example(tok: Any, record: Record, max_length: int) -> Example | None:
    """One Example per pair: the chosen sequence, then the rejected one (positions restart),
    each cut to max_length tokens, labels on the responses only; None when a response is cut
    away entirely (nothing to compare)."""
    prompt, chosen, rejected = tokenize_pair(tok, record)
    seqs = [(prompt + r)[:max_length] for r in (chosen, rejected)]
    labels = [[IGNORE if i < len(prompt) else t for i, t in enumerate(s)] for s in seqs]
    if any(len(s) <= len(prompt) for s in seqs):
        return None
    return Example(
        ids=seqs[0] + seqs[1],
        labels=labels[0] + labels[1],
        positions=list(range(len(seqs[0]))) + list(range(len(seqs[1]))),
        chosen_length=len(seqs[0]),
    )


def require_chat_template(tok: Any, record: Record) -> None:
    """Chat records cannot be rendered without the tokenizer's chat template."""
    if not getattr(tok, "chat_template", None):
        raise BadInputError(f"{record.where}: chat records need a tokenizer with a chat template")


def tokenize_record(tok: Any, record: Record, fmt: str) -> Example:
    """Ids and loss labels for one record; eos closes every example."""
    d = record.data
    eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
    if fmt == "chat":
        require_chat_template(tok, record)
        return tokenize_chat(tok, d["messages"])
    if fmt == "prompt-completion":
        prompt = bos(tok) + encode_text(tok, d["prompt"])
        completion = encode_text(tok, d["completion"]) + eos
        return Example(prompt + completion, [IGNORE] * len(prompt) + completion)
    ids = bos(tok) + encode_text(tok, d["text"]) + eos
    return Example(ids, list(ids))


def pack(examples: list[Example], length: int, pad_id: int) -> list[Example]:
    """Concatenate examples into sequences of exactly length tokens (the last one padded)."""
    ids: list[int] = []
    labels: list[int] = []
    pos: list[int] = []
    for ex in examples:
        ids += ex.ids
        # a record's first token is not predicted from the record before it
        labels += [IGNORE] * min(1, len(ex.labels)) + ex.labels[1:]
        pos += range(len(ex.ids))
    out = [
        Example(ids[i : i + length], labels[i : i + length], pos[i : i + length])
        for i in range(0, len(ids), length)
    ]
    if out and len(out[-1].ids) < length:
        missing = length - len(out[-1].ids)
        last = out[-1]
        out[-1] = Example(
            last.ids + [pad_id] * missing,
            last.labels + [IGNORE] * missing,
            (last.positions or []) + list(range(missing)),
        )
    return [e for e in out if any(lab != IGNORE for lab in e.labels)]


def pad_to(examples: list[Example], length: int, pad_id: int) -> list[Example]:
    """Truncate or pad each example to length tokens (no packing)."""
    out = []
    for ex in examples:
        ids, labels = ex.ids[:length], ex.labels[:length]
        missing = length - len(ids)
        out.append(Example(ids + [pad_id] * missing, labels + [IGNORE] * missing))
    return [e for e in out if any(lab != IGNORE for lab in e.labels)]


def split(records: list[Record], fraction: float, seed: int) -> tuple[list[Record], list[Record]]:
    """A seeded held-out split: (train, validation)."""
    if not 0 < fraction < 1:
        raise BadInputError(f"data.validation_split must be in (0, 1), got {fraction}")
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    n_val = max(1, int(len(records) * fraction))
    val = set(order[:n_val])
    return [r for i, r in enumerate(records) if i not in val], [
        r for i, r in enumerate(records) if i in val
    ]


def load_split(
    uri: str,
    cache_dir: Path,
    storage: StorageConfig | None,
    split: str = "train",
    field: str | None = None,
) -> tuple[list[Record], list[SourceInfo]]:
    """All records under a URI and the lineage of each file; `field` names the URI in errors
    (default spec.dataset.<split>)."""
    records: list[Record] = []
    sources = []
    commit: str | None = None
    if uri.startswith("hf://"):
        files, commit = hub_files(uri, split, storage.endpoint if storage else None)
    else:
        files = resolve_files(uri, cache_dir, storage, field or f"spec.dataset.{split}")
    for path in files:
        recs = read_records(path)
        records += recs
        sources.append(
            SourceInfo(
                uri=f"{uri}" if path.name in uri else f"{uri.rstrip('/')}/{path.name}",
                sha256=sha256_file(path),
                records=len(recs),
                commit=commit,
            )
        )
    if not records:
        raise BadInputError(f"data {uri!r}: no records")
    return records, sources


def to_sequences(tok: Any, records: list[Record], fmt: str, cfg: DataConfig) -> list[Example]:
    """Check, tokenize and pack (or pad) records into fixed-length sequences; preference records
    become one Example per pair (batched by kubetune_trainer.preference, never packed here)."""
    if fmt == "preference":
        for r in records:
            check_record(r, fmt)
        pairs = (pair_example(tok, r, cfg.max_seq_length) for r in records)
        return [p for p in pairs if p is not None]
    examples = []
    for r in records:
        f = detect_format(r) if fmt == "auto" else fmt
        check_record(r, f)
        examples.append(tokenize_record(tok, r, f))
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    return (
        pack(examples, cfg.max_seq_length, pad_id)
        if cfg.packing
        else pad_to(examples, cfg.max_seq_length, pad_id)
    )


def build_dataset(
    tok: Any, cfg: DataConfig, seed: int, cache_dir: Path, storage: StorageConfig | None = None
) -> Dataset:
    """Train and validation sequences from the config, deterministic for a seed.

    `storage` overrides the dataset's own store connection (cfg.storage)."""
    storage = storage or cfg.storage
    train_recs, sources = load_split(cfg.train, cache_dir, storage)
    fmt = detect_format(train_recs[0]) if cfg.format == "auto" else cfg.format
    val_recs: list[Record] = []
    if cfg.validation:
        val_recs, val_sources = load_split(cfg.validation, cache_dir, storage, "validation")
        sources += val_sources
    elif cfg.validation_split:
        train_recs, val_recs = split(train_recs, cfg.validation_split, seed)
    train = to_sequences(tok, train_recs, fmt, cfg)
    if not train:
        raise BadInputError(f"data {cfg.train!r}: no sequence has a token to learn from")
    return Dataset(
        train=train,
        validation=to_sequences(tok, val_recs, fmt, cfg) if val_recs else [],
        format=fmt,
        sources=sources,
    )


def micro_batch_indices(
    n: int, micro: int, rank: int, world: int, seed: int, index: int
) -> list[int]:
    """Example indices of this rank's micro-batch number `index` (epochs reshuffle with seed+epoch).

    A pure function of its arguments, so a resumed run sees exactly the batches it would have.
    """
    per_epoch = micro_batches_per_epoch(n, micro, world)
    epoch, pos = divmod(index, per_epoch)
    order = list(range(n))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    mine = order[rank::world][: per_epoch * micro]
    return mine[pos * micro : (pos + 1) * micro]


def micro_batches_per_epoch(n: int, micro: int, world: int) -> int:
    """Whole micro-batches each rank gets per epoch (the ragged tail is dropped)."""
    per = (n // world) // micro
    if per < 1:
        raise BadInputError(
            f"data: {n} sequences cannot fill one micro-batch of {micro} on {world} ranks"
        )
    return per


def collate(examples: list[Example]) -> dict[str, Any]:
    """Tensors for a micro-batch of equal-length examples (position_ids for packed rows)."""
    import torch

    batch = {
        "input_ids": torch.tensor([e.ids for e in examples], dtype=torch.long),
        "labels": torch.tensor([e.labels for e in examples], dtype=torch.long),
    }
    if all(e.positions is not None for e in examples):
        batch["position_ids"] = torch.tensor([e.positions for e in examples], dtype=torch.long)
    return batch
