"""Save, upload, commit, restore and prune checkpoints.

Each rank saves its DeepSpeed shards into its own local folder (the only part that blocks
training), then uploads them in a background thread and records its file list in the store.
Rank 0's thread waits for every rank's record and only then writes the manifest; it also prunes.
The threads never call collectives, so they cannot deadlock with training.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ..config import CheckpointConfig
from ..contract import ATTEMPT_ENV
from ..errors import BadInputError
from ..storage import Storage, inside, join, open_storage, sha256_file
from . import rng
from .listing import best, listing
from .manifest import (
    MANIFEST,
    Committed,
    committed,
    files_to_fetch,
    merge_ranks,
    owned_tags,
    owner_key,
    rank_key,
    read_record,
    rng_file,
    tag_for,
    to_delete,
)
from .seal import Seal

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class Restored:
    """What a resume loaded."""

    tag: str
    step: int
    client_state: dict[str, Any]
    skipped: dict[str, list[str]]
    fetched: list[str]  # the files of the checkpoint this rank downloaded
    rng_restored: bool  # False for checkpoints without this rank's RNG states
    attachments: dict[str, bytes] = field(default_factory=dict)  # asked-for files rank 0 added


def describe_files(folder: Path) -> dict[str, dict[str, Any]]:
    """Size and sha256 of every file under a folder, keyed by relative path."""
    return {
        str(p.relative_to(folder)): {"size": p.stat().st_size, "sha256": sha256_file(p)}
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def with_retries(
    action: Callable[[], T],
    what: str,
    give_up_after: float,
    first_delay: float = 1.0,
    max_delay: float = 10.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """action(), retried with backoff until give_up_after seconds have passed: an object store
    that is briefly unreachable must not end the run (the client's own few retries span
    seconds, outages last longer)."""
    deadline = clock() + give_up_after
    delay = first_delay
    while True:
        try:
            return action()
        except BadInputError:
            raise  # the job's own mistake: no retry makes it right
        except Exception as e:
            if clock() + delay > deadline:
                raise
            log.warning("%s failed (%s); retrying in %.0fs", what, e, delay)
            sleep(delay)
            delay = min(2 * delay, max_delay)


FAULT_UPLOAD_PAUSE = "KUBETUNE_FAULT_UPLOAD_PAUSE"


def injected_upload_pause(tag: str, env: Mapping[str, str] = os.environ) -> float:
    """Seconds to pause after the first file of checkpoint `tag`: a fault hook for end-to-end
    tests, which cannot otherwise kill a worker while a checkpoint is half uploaded, nor make an
    upload outlast torchrun's default shutdown timeout.
    KUBETUNE_FAULT_UPLOAD_PAUSE="ATTEMPT:STEP:SECONDS" (KUBETUNE_ATTEMPT must match; STEP * is
    every checkpoint); unset: 0."""
    value = env.get(FAULT_UPLOAD_PAUSE)
    if not value:
        return 0.0
    attempt, step, seconds = value.split(":")
    if env.get(ATTEMPT_ENV, "1") == attempt and (step == "*" or tag == tag_for(int(step))):
        return float(seconds)
    return 0.0


def claim(store: Storage, tag: str, seal: Seal, uri: str) -> None:
    """Mark a checkpoint folder as this job's before writing into it; bad input (naming
    spec.checkpoint.uri) when another job, or an unknown writer, holds that folder already:
    each job needs its own checkpoint URI, and nothing there is overwritten."""
    objects = store.list(tag)  # listed before the marker is read: a sibling rank writes its
    marker, _ = read_record(store, owner_key(tag))  # marker before any file, so it shows here
    if marker is None and not objects:
        store.put_bytes(json.dumps(seal.sign({"tag": tag})).encode(), owner_key(tag))
        return
    if not seal.mine(marker):
        whose = marker.get("job") if seal.verify(marker) else "an unknown writer"
        raise BadInputError(
            f"spec.checkpoint.uri: {join(uri, tag)} is held by {whose}, not by job {seal.job}: "
            "give each job its own checkpoint URI"
        )


def upload_rank(store: Storage, folder: Path, tag: str, rank: int, seal: Seal) -> dict[str, Any]:
    """Upload this rank's files of a checkpoint, then record them (the signed record means
    'done')."""
    files = describe_files(folder)
    for i, name in enumerate(files):
        store.put_file(folder / name, join(tag, name))
        if i == 0:
            time.sleep(injected_upload_pause(tag))
    record = seal.sign({"rank": rank, "files": files})
    store.put_bytes(json.dumps(record).encode(), rank_key(tag, rank))
    return record


def wait_for_ranks(
    store: Storage, tag: str, world_size: int, timeout: float, seal: Seal, poll: float = 0.2
) -> list[dict[str, Any]]:
    """Every rank's upload record for a checkpoint, signed by this job (anything else in
    their place counts as not there yet); TimeoutError if some never arrive."""
    deadline = time.monotonic() + timeout
    while True:
        records = [read_record(store, rank_key(tag, r))[0] for r in range(world_size)]
        if all(seal.mine(r) for r in records):
            return records
        if time.monotonic() > deadline:
            missing = [r for r, rec in enumerate(records) if not seal.mine(rec)]
            raise TimeoutError(f"checkpoint {tag}: ranks {missing} did not finish uploading")
        time.sleep(poll)


def commit(
    store: Storage,
    tag: str,
    step: int,
    world_size: int,
    timeout: float,
    extra: dict[str, Any],
    seal: Seal,
) -> dict[str, Any]:
    """Write the signed manifest once all ranks uploaded: the checkpoint now counts."""
    ranks = wait_for_ranks(store, tag, world_size, timeout, seal)
    manifest = seal.sign(merge_ranks(tag, step, world_size, ranks, extra))
    store.put_bytes(json.dumps(manifest, indent=1).encode(), join(tag, MANIFEST))
    return manifest


@dataclass(frozen=True)
class Pruned:
    """What a prune deleted and which committed checkpoints it left in the store."""

    deleted: list[str]
    kept: list[str]
    kept_checkpoints: list[Committed] = field(default_factory=list, compare=False)


def prune(store: Storage, keep_last: int, seal: Seal, keep_best: bool = False) -> Pruned:
    """Delete this job's folders older than its newest keep_last committed checkpoints (and,
    with keep_best, never the one with the lowest eval loss: the job exports it at the end);
    other jobs' (and unknown writers') folders are never touched.

    Also returns the committed ones still kept, so rank 0 can report them without listing the
    store again."""
    good, _ = committed(store, seal)
    top = best(good) if keep_best else None
    doomed = to_delete(
        owned_tags(store, seal), [c.tag for c in good], keep_last, top.tag if top else None
    )
    for tag in doomed:
        store.delete_prefix(tag + "/")
    kept = [c for c in good if c.tag not in doomed]
    return Pruned(deleted=doomed, kept=[c.tag for c in kept], kept_checkpoints=kept)


def download(
    store: Storage, ckpt: Committed, dest: Path, names: list[str] | None = None
) -> list[str]:
    """Fetch some files of a checkpoint (default: all) and check their sha256; returns the
    mismatches."""
    shutil.rmtree(dest, ignore_errors=True)
    files = ckpt.manifest["files"]
    bad = []
    for name in files if names is None else names:
        target = inside(dest, name, f"checkpoint {ckpt.tag}: file")
        store.get_file(join(ckpt.tag, name), target)
        if sha256_file(target) != files[name]["sha256"]:
            bad.append(f"{name}: sha256 mismatch")
    return bad


class CheckpointManager:
    """Per-rank checkpoint handling for one run."""

    def __init__(
        self,
        cfg: CheckpointConfig,
        rank: int,
        world_size: int,
        job_key: str,
        seal: Seal,
        every_shard: bool = False,
        keep_best: bool = False,
    ) -> None:
        """rank must be the data-parallel rank DeepSpeed names shards by (the global rank without
        model parallelism); seal signs and verifies (the namespace's key, this job's name);
        every_shard: resume reads every rank's shards (see reads_every_shard); keep_best:
        pruning spares the checkpoint with the lowest eval loss."""
        self.cfg, self.rank, self.world_size, self.seal = cfg, rank, world_size, seal
        self.every_shard, self.keep_best = every_shard, keep_best
        # recorded in every manifest: what `kubetune export` needs to rebuild the model
        self.lineage: dict[str, Any] = {}
        self.store: Storage | None = open_storage(cfg.uri, cfg.storage) if cfg.uri else None
        self.local = Path(cfg.local_dir) / job_key / f"rank-{rank:05d}"
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.committed_steps: list[int] = []
        # rank 0: tag, step, uri, time of the newest commit, and count (committed ones kept)
        self.last_committed: dict[str, Any] | None = None
        self.commit_timeout = 1800.0

    @property
    def enabled(self) -> bool:
        """Whether checkpoints go anywhere."""
        return self.store is not None

    def save(
        self,
        engine: Any,
        step: int,
        client_state: dict[str, Any],
        exclude_frozen: bool,
        metrics: dict[str, Any] | None = None,
        attachments: dict[str, bytes] | None = None,
    ) -> None:
        """Save locally (blocking, collective), then upload and commit in the background;
        metrics (train and eval loss of the step) go into the manifest.

        attachments: files rank 0 adds to the checkpoint (state beside DeepSpeed's, such as the
        reference log-probs of preference tuning); every rank fetches them on resume."""
        if self.store is None:
            return
        self.wait()
        tag = tag_for(step)
        store = self.store
        with_retries(
            lambda: claim(store, tag, self.seal, self.cfg.uri or ""),
            f"claim of {tag}",
            self.commit_timeout,
        )
        save_dir = self.local / "save"
        engine.save_checkpoint(
            str(save_dir),
            tag=tag,
            client_state=client_state,
            exclude_frozen_parameters=exclude_frozen,
        )
        folder = save_dir / tag
        folder.mkdir(parents=True, exist_ok=True)  # a rank with no shards of its own (stage 0)
        for name, body in (attachments or {}).items() if self.rank == 0 else ():
            (folder / name).write_bytes(body)
        # After DeepSpeed's save: the state the next step starts from, in this run or a resumed one.
        rng.save(folder / rng_file(self.rank))
        helper = save_dir / "zero_to_fp32.py"
        if self.rank == 0 and helper.is_file():
            shutil.copyfile(helper, folder / helper.name)
        extra = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "client_state": client_state,
            "metrics": metrics or {},
            **self.lineage,
        }
        self._thread = threading.Thread(
            target=self._publish, args=(folder, tag, step, extra), daemon=True
        )
        self._thread.start()

    def _publish(self, folder: Path, tag: str, step: int, extra: dict[str, Any]) -> None:
        assert self.store is not None
        store, limit = self.store, self.commit_timeout
        try:
            with_retries(
                lambda: upload_rank(store, folder, tag, self.rank, self.seal),
                f"upload of {tag}",
                limit,
            )
            shutil.rmtree(folder, ignore_errors=True)
            if self.rank == 0:
                with_retries(
                    lambda: commit(store, tag, step, self.world_size, limit, extra, self.seal),
                    f"commit of {tag}",
                    limit,
                )
                self.committed_steps.append(step)
                latest = {
                    "tag": tag,
                    "step": step,
                    "uri": join(self.cfg.uri or "", tag),
                    "time": extra["time"],
                }
                try:
                    pruned = with_retries(
                        lambda: prune(store, self.cfg.keep_last, self.seal, self.keep_best),
                        f"pruning after {tag}",
                        limit,
                    )
                except BaseException:
                    self.last_committed = latest  # committed all the same: still report it
                    raise
                # latest, count and the list change together, so no status patch mixes them
                self.last_committed = {
                    **latest,
                    "count": len(pruned.kept),
                    "committed": listing(pruned.kept_checkpoints, self.cfg.uri or ""),
                }
        except BaseException as e:  # reported by wait(), on the training thread
            self.error = e

    def wait(self) -> None:
        """Block until the previous checkpoint is uploaded (and, on rank 0, committed)."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self.error is not None:
            err, self.error = self.error, None
            raise RuntimeError(f"checkpoint upload failed: {err}") from err

    def candidates(self) -> tuple[list[Committed], dict[str, list[str]]]:
        """Committed checkpoints to try, newest first: this job's own, or the one named by
        checkpoint.resume, which any job of the namespace may have committed."""
        if self.cfg.resume == "never" or self.store is None:
            return [], {}
        if self.cfg.resume == "auto":
            return committed(self.store, self.seal)
        root, _, tag = self.cfg.resume.rstrip("/").rpartition("/")
        good, skipped = committed(open_storage(root, self.cfg.storage), self.seal, any_job=True)
        return [c for c in good if c.tag == tag], {t: p for t, p in skipped.items() if t == tag}

    def restore(
        self, engine: Any, all_ok: Any, exclude_frozen: bool, attachments: tuple[str, ...] = ()
    ) -> Restored | None:
        """Load the newest checkpoint every rank downloaded intact; torn ones are skipped.

        all_ok(bool) -> bool must be a collective AND across ranks, so all ranks pick the same one.
        The named attachments it holds come back in Restored.attachments.
        """
        good, skipped = self.candidates()
        for tag, why in skipped.items():
            log.warning("not resuming from checkpoint %s: %s", tag, "; ".join(why))
        store = (
            self.store
            if self.cfg.resume == "auto"
            else open_storage(self.cfg.resume.rstrip("/").rpartition("/")[0], self.cfg.storage)
        )
        for ckpt in good:
            dest = self.local / "restore" / ckpt.tag
            names = files_to_fetch(ckpt.manifest, self.rank, self.world_size, self.every_shard)
            try:
                bad = download(store, ckpt, dest, names) if store is not None else ["no store"]
            except Exception as e:
                bad = [f"download failed: {e}"]
            if not all_ok(not bad):
                skipped[ckpt.tag] = bad or ["another rank could not read it"]
                log.warning("skipping checkpoint %s: %s", ckpt.tag, skipped[ckpt.tag])
                shutil.rmtree(dest, ignore_errors=True)  # a torn download only takes disk
                continue
            _, client_state = engine.load_checkpoint(
                str(dest.parent),
                tag=ckpt.tag,
                load_module_strict=not exclude_frozen,
                load_optimizer_states=True,
                load_lr_scheduler_states=True,
            )
            rng_restored = self._restore_rng(dest / rng_file(self.rank), ckpt.tag)
            attached = {n: (dest / n).read_bytes() for n in attachments if (dest / n).is_file()}
            shutil.rmtree(dest, ignore_errors=True)
            log.info(
                "rank %d resumed from %s; fetched %d of its %d files",
                self.rank,
                ckpt.tag,
                len(names),
                len(ckpt.manifest["files"]),
            )
            return Restored(
                ckpt.tag,
                ckpt.step,
                dict(client_state or {}),
                skipped,
                names,
                rng_restored,
                attached,
            )
        if self.cfg.resume not in ("auto", "never"):
            raise BadInputError(
                f"spec.checkpoint.resume: {self.cfg.resume} is no committed checkpoint this job "
                f"may restore: {skipped or 'nothing there'}"
            )
        return None

    def _restore_rng(self, path: Path, tag: str) -> bool:
        """Continue this rank's random streams (dropout) where the checkpoint left them."""
        if not path.is_file():  # saved before RNG states were, or by fewer ranks
            log.warning(
                "checkpoint %s has no RNG states for rank %d: dropout will not repeat the "
                "masks of an uninterrupted run",
                tag,
                self.rank,
            )
            return False
        rng.load(path)
        return True
