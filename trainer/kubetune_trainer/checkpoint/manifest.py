"""Checkpoint layout in the store, and the pure rules for commit, validity, choice, retention and
which files a rank reads on resume.

<root>/step-00000100/_owner.json            the job that writes this folder, before any file
<root>/step-00000100/<DeepSpeed files of every rank, and each rank's RNG states>
<root>/step-00000100/_ranks/rank-<r>.json   one per rank, written after its upload
<root>/step-00000100/manifest.json          written by rank 0 last: the commit

The three records are signed (seal.Seal): a job resumes from and prunes only folders it signed,
so two jobs that share a checkpoint URI never read or delete each other's, and nothing a foreign
writer puts in the store is ever downloaded, let alone unpickled.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ..storage import Storage, join, safe_relative
from .seal import Seal

TAG_RE = re.compile(r"^step-(\d{8})$")
MANIFEST = "manifest.json"
RANKS = "_ranks"
OWNER = "_owner.json"


def tag_for(step: int) -> str:
    """The folder name of the checkpoint at a step (sorts by step)."""
    return f"step-{step:08d}"


def step_of(tag: str) -> int | None:
    """The step encoded in a folder name, or None if it is not a checkpoint folder."""
    m = TAG_RE.match(tag)
    return int(m.group(1)) if m else None


def rank_key(tag: str, rank: int) -> str:
    """Where a rank records the files it uploaded."""
    return join(tag, RANKS, f"rank-{rank:05d}.json")


# Files only one data-parallel rank reads when DeepSpeed resumes at the same world size: ZeRO
# optimizer shards (all stages; "bf16_" prefix with the bf16 optimizer, and the old name without
# "_" before "optim"), ZeRO-3 parameter shards, NVMe-offloaded optimizer state, RNG states.
# Everything else (mp_rank_*_model_states.pt of stages 0-2, zero_to_fp32.py, any file not known
# here) is read by every rank or by none, so every rank fetches it.
RANK_FILE_RE = re.compile(
    r"^(?:bf16_)?zero_pp_rank_(?P<zero>\d+)_mp_rank_\d+_?(?:optim|model)_states\.pt$"
    r"|^offloaded_tensors/rank(?P<nvme>\d+)/"
    r"|^rng_state_rank_(?P<rng>\d+)\.pt$"
)


def rng_file(rank: int) -> str:
    """The name of a rank's RNG-state file inside a checkpoint folder."""
    return f"rng_state_rank_{rank:05d}.pt"


def reader_rank(name: str) -> int | None:
    """The one rank that reads a checkpoint file on resume, or None if it is shared."""
    m = RANK_FILE_RE.match(name)
    if not m:
        return None
    return int(next(g for g in m.groups() if g is not None))


def reads_every_shard(ds_config: dict[str, Any]) -> bool:
    """Whether DeepSpeed's load_checkpoint reads other ranks' shards under this config: elastic
    ZeRO checkpoints (each rank loads every optimizer shard), universal checkpoints, and
    node-local storage (shards named by local rank, which repeats across nodes)."""
    zero = ds_config.get("zero_optimization") or {}
    ckpt = ds_config.get("checkpoint") or {}
    return bool(
        zero.get("elastic_checkpoint")
        or ckpt.get("load_universal")
        or ckpt.get("use_node_local_storage")
    )


def files_to_fetch(
    manifest: dict[str, Any], rank: int, world_size: int, every_shard: bool = False
) -> list[str]:
    """The files of a committed checkpoint that `rank` must download to resume.

    At the world size it was saved with, a rank reads only the shared files and its own shards
    (DeepSpeed loads the optimizer shard of its own data-parallel rank, and under ZeRO-3 its own
    parameter shard). At another world size, or when the config makes DeepSpeed read every shard,
    every file is fetched: DeepSpeed then either needs them all or refuses the load itself.
    """
    names = sorted(manifest.get("files", {}))
    if every_shard or manifest.get("world_size") != world_size:
        return names
    return [n for n in names if reader_rank(n) in (None, rank)]


def merge_ranks(
    tag: str, step: int, world_size: int, rank_files: list[dict[str, Any]], extra: dict[str, Any]
) -> dict[str, Any]:
    """The manifest: every rank's files with sizes and sha256, step and world size."""
    files: dict[str, dict[str, Any]] = {}
    for entry in rank_files:
        files.update(entry["files"])
    return {
        "tag": tag,
        "step": step,
        "world_size": world_size,
        "files": dict(sorted(files.items())),
        **extra,
    }


@dataclass(frozen=True)
class Committed:
    """A checkpoint whose manifest exists and whose objects are all present with the right sizes."""

    tag: str
    step: int
    manifest: dict[str, Any]


def tags_in(listing: dict[str, int]) -> dict[str, dict[str, int]]:
    """Objects of a store listing grouped by checkpoint folder."""
    out: dict[str, dict[str, int]] = {}
    for key, size in listing.items():
        head, _, rest = key.partition("/")
        if step_of(head) is not None and rest:
            out.setdefault(head, {})[rest] = size
    return out


def owner_key(tag: str) -> str:
    """Where the job writing a checkpoint folder says so, before it uploads anything there."""
    return join(tag, OWNER)


def read_record(store: Storage, key: str) -> tuple[Any, str | None]:
    """A JSON record of the store and None, or None and why it cannot be read (absent, torn,
    not JSON): a corrupt record makes its checkpoint skipped, never the run fail."""
    try:
        raw = store.get_bytes(key)
    except Exception as e:  # a store error on one record skips that checkpoint
        return None, f"{key}: unreadable ({e})"
    if raw is None:
        return None, None
    try:
        return json.loads(raw), None
    except ValueError as e:
        return None, f"{key}: not valid JSON ({e})"


def _file_problems(files: Any, objects: dict[str, int]) -> list[str]:
    """What is wrong with a manifest's file list: names that leave the folder, wrong types,
    files missing from the store or of another size."""
    if not isinstance(files, dict) or not files:
        return ["manifest lists no files"]
    issues = []
    for name, info in files.items():
        if safe_relative(name) is None:
            issues.append(f"{name!r}: not a plain relative path")
        elif not isinstance(info, dict) or not isinstance(info.get("size"), int):
            issues.append(f"{name}: no size")
        elif not isinstance(info.get("sha256"), str):
            issues.append(f"{name}: no sha256")
        elif name not in objects:
            issues.append(f"{name}: missing")
        elif objects[name] != info["size"]:
            issues.append(f"{name}: size {objects[name]} != {info['size']}")
    return issues


def problems(
    manifest: Any, objects: dict[str, int], tag: str, seal: Seal, any_job: bool = False
) -> list[str]:
    """Why a checkpoint folder is not usable (empty list: committed by this job, or with
    `any_job` by any job of the namespace, and complete)."""
    if manifest is None:
        return ["no manifest (upload cut or not committed)"]
    if not seal.verify(manifest):
        return ["not signed with this namespace's checkpoint key: written by someone else"]
    if not any_job and manifest.get("job") != seal.job:
        return [f"committed by job {manifest.get('job')}, not by this job"]
    if manifest.get("tag") != tag or not isinstance(manifest.get("step"), int):
        return [f"the manifest is of {manifest.get('tag')!r}, not of this folder"]
    return _file_problems(manifest.get("files"), objects)


def committed(
    store: Storage, seal: Seal, any_job: bool = False
) -> tuple[list[Committed], dict[str, list[str]]]:
    """Complete checkpoints this job committed (with `any_job`: any job of the namespace),
    newest first, and the problems of the folders skipped."""
    good, skipped = [], {}
    for tag, objects in sorted(tags_in(store.list("")).items(), reverse=True):
        manifest: Any
        manifest, error = (
            read_record(store, join(tag, MANIFEST)) if MANIFEST in objects else (None, None)
        )
        issues = [error] if error else problems(manifest, objects, tag, seal, any_job)
        if issues:
            skipped[tag] = issues
        else:
            good.append(Committed(tag, int(manifest["step"]), manifest))
    return good, skipped


def owned_tags(store: Storage, seal: Seal) -> list[str]:
    """Checkpoint folders this job started (its signed owner marker), committed or not: the
    only ones its retention may delete."""
    mine = []
    for tag, objects in tags_in(store.list("")).items():
        if OWNER in objects and seal.mine(read_record(store, owner_key(tag))[0]):
            mine.append(tag)
    return sorted(mine)


def to_delete(
    all_tags: list[str], committed_tags: list[str], keep_last: int, protect: str | None = None
) -> list[str]:
    """Folders older than the oldest of the newest keep_last committed checkpoints, except
    `protect` (the best checkpoint, when the job exports the best weights)."""
    keep = sorted(committed_tags, reverse=True)[: max(1, keep_last)]
    if not keep:
        return []
    oldest_kept = min(keep)
    return sorted(t for t in all_tags if t < oldest_kept and t != protect)
