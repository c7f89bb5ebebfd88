"""Checkpoint layout in the store, and the pure rules for commit, validity, choice and retention.

<root>/step-00000100/<DeepSpeed files of every rank>
<root>/step-00000100/_ranks/rank-<r>.json   one per rank, written after its upload
<root>/step-00000100/manifest.json          written by rank 0 last: the commit
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from .storage import Storage, join

TAG_RE = re.compile(r"^step-(\d{8})$")
MANIFEST = "manifest.json"
RANKS = "_ranks"


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


def problems(manifest: dict[str, Any] | None, objects: dict[str, int]) -> list[str]:
    """Why a checkpoint folder is not usable (empty list: it is committed and complete)."""
    if manifest is None:
        return ["no manifest (upload cut or not committed)"]
    issues = []
    for name, info in manifest.get("files", {}).items():
        if name not in objects:
            issues.append(f"{name}: missing")
        elif objects[name] != info["size"]:
            issues.append(f"{name}: size {objects[name]} != {info['size']}")
    if not manifest.get("files"):
        issues.append("manifest lists no files")
    return issues


def committed(store: Storage) -> tuple[list[Committed], dict[str, list[str]]]:
    """Committed, complete checkpoints newest first, and the problems of the folders skipped."""
    good, skipped = [], {}
    for tag, objects in sorted(tags_in(store.list("")).items(), reverse=True):
        raw = store.get_bytes(join(tag, MANIFEST)) if MANIFEST in objects else None
        manifest = json.loads(raw) if raw else None
        issues = problems(manifest, objects)
        if issues:
            skipped[tag] = issues
        else:
            assert manifest is not None
            good.append(Committed(tag, int(manifest["step"]), manifest))
    return good, skipped


def to_delete(all_tags: list[str], committed_tags: list[str], keep_last: int) -> list[str]:
    """Folders older than the oldest of the newest keep_last committed checkpoints."""
    keep = sorted(committed_tags, reverse=True)[: max(1, keep_last)]
    if not keep:
        return []
    oldest_kept = min(keep)
    return sorted(t for t in all_tags if t < oldest_kept)
