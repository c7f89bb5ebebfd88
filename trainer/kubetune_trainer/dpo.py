"""Objective dpo on the trainer's engine: the loss of a micro-batch of pairs, the reference
(precomputed in a first pass and kept with the checkpoints, or the base under a disabled adapter,
or none), evaluation with rewards and preference accuracy, and what status and the run card show.

The Trainer keeps its engine, gang, checkpoints, export and metrics; it asks this object for the
loss where supervised fine-tuning takes the model's own.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from . import preference as pref
from .config import PreferenceConfig
from .data import Dataset
from .errors import BadInputError

log = logging.getLogger(__name__)

REFERENCE_FILE = "reference_logps.safetensors"
"""The checkpoint attachment holding precomputed reference log-probs, per split."""


class Dpo:
    """Preference tuning state of one rank."""

    def __init__(
        self,
        cfg: PreferenceConfig,
        method_type: str,
        data: Dataset,
        pad_id: int,
        packed: bool,
        varlen: bool,
        micro: int,
        rank: int,
        world: int,
        continues_adapter: bool = False,
    ) -> None:
        self.cfg = cfg
        self.mode: pref.Reference = pref.reference_mode(method_type, cfg.loss, continues_adapter)
        self.splits = {"train": data.train, "validation": data.validation}
        self.pad_id, self.packed, self.varlen = pad_id, packed, varlen
        self.micro, self.rank, self.world = micro, rank, world
        self.reference: dict[str, Any] = {}  # split -> (pairs, 2) float64: chosen, rejected sums
        self.reference_seconds = 0.0
        self.window = pref.Totals()  # this rank's pairs of the step under way
        self.train_summary: dict[str, float] | None = None
        self.eval_summary: dict[str, float] | None = None
        self.evals: list[tuple[int, dict[str, float]]] = []

    # -- batches -------------------------------------------------------------------------------
    def batch(self, split: str, idx: list[int], device: Any) -> dict[str, Any]:
        """The pairs idx of a split as model inputs on the device."""
        from . import perf

        b = pref.collate_pairs([self.splits[split][i] for i in idx], self.pad_id, self.packed)
        if self.packed and self.varlen:
            b = perf.varlen_inputs(b)
        return {k: v.to(device) if hasattr(v, "to") else v for k, v in b.items()}

    def reference_logps(
        self, engine: Any, split: str, idx: list[int], batch: dict[str, Any]
    ) -> Any:
        """Reference log-prob sums of the 2B sequences of a batch (None: reference-free)."""
        import torch

        if self.mode == "none":
            return None
        if self.mode == "precomputed":
            table = self.reference[split][idx]
            return torch.cat([table[:, 0], table[:, 1]]).to(batch["input_ids"].device).float()
        with torch.no_grad(), engine.module.disable_adapter():
            return pref.batch_logps(engine, batch)[0]

    def pair_values(self, engine: Any, split: str, idx: list[int]) -> tuple[Any, Any, Any, int]:
        """(per-pair losses, chosen rewards, rejected rewards, tokens) of pairs idx of a split."""
        batch = self.batch(split, idx, engine.device)
        reference = self.reference_logps(engine, split, idx, batch)
        policy, counts = pref.batch_logps(engine, batch)
        losses, chosen, rejected = pref.pair_losses(self.cfg, policy, counts, reference)
        return losses, chosen, rejected, int(batch["input_ids"].numel())

    # -- training ------------------------------------------------------------------------------
    def micro_loss(self, engine: Any, idx: list[int]) -> tuple[Any, int]:
        """The loss of one training micro-batch (mean over its pairs) and its tokens."""
        losses, chosen, rejected, tokens = self.pair_values(engine, "train", idx)
        self.window.add(losses, chosen, rejected)
        return losses.mean(), tokens

    def end_step(self, all_sum: Any) -> None:
        """Close a step: its loss, rewards and accuracy over every rank's pairs (a collective)."""
        self.train_summary = pref.reduced(self.window, all_sum).summary()
        self.window = pref.Totals()

    # -- evaluation ----------------------------------------------------------------------------
    def evaluate(self, engine: Any, all_sum: Any) -> float | None:
        """Mean loss over the validation pairs; rewards and preference accuracy kept for status.

        Every rank runs the same number of forwards (ZeRO-3 gathers weights collectively)."""
        import torch

        if not self.splits["validation"]:
            return None
        totals = pref.Totals()
        engine.eval()
        with torch.no_grad():
            for idx in self.rank_batches(len(self.splits["validation"])):
                losses, chosen, rejected, _ = self.pair_values(engine, "validation", idx or [0])
                totals.add(losses, chosen, rejected, 1.0 if idx else 0.0)
        engine.train()
        self.eval_summary = pref.reduced(totals, all_sum).summary()
        if self.eval_summary is None:
            return None
        self.evals.append((int(engine.global_steps), self.eval_summary))
        return self.eval_summary["loss"]

    def rank_batches(self, n: int) -> list[list[int]]:
        """This rank's share of n items in micro-batches; the same count on every rank (a rank
        with fewer items gets empty batches, run on a filler pair and weighted 0)."""
        mine = list(range(self.rank, n, self.world))
        count = math.ceil(math.ceil(n / self.world) / self.micro)
        return [mine[b * self.micro : (b + 1) * self.micro] for b in range(count)]

    # -- the reference -------------------------------------------------------------------------
    def prepare(self, engine: Any, attachments: dict[str, bytes] | None) -> None:
        """Have the reference ready: from the checkpoint resumed, or a first pass over the data
        while the engine still holds the weights training starts from."""
        if self.mode != "precomputed":
            return
        if attachments is not None:
            if REFERENCE_FILE not in attachments:
                raise BadInputError(
                    f"the checkpoint resumed has no {REFERENCE_FILE}: it was not written by a "
                    "preference run with a precomputed reference; set spec.checkpoint.resume: never"
                )
            self.reference = self.load(attachments[REFERENCE_FILE])
            return
        started = time.monotonic()
        self.reference = {s: self.precompute(engine, s) for s in self.splits}
        self.reference_seconds = time.monotonic() - started
        log.info("reference log-probs of %s pairs in %.1fs", self.sizes(), self.reference_seconds)

    def precompute(self, engine: Any, split: str) -> Any:
        """Reference log-prob sums of every pair of a split, on every rank (a collective)."""
        import torch
        import torch.distributed as dist

        pairs = self.splits[split]
        table = torch.zeros(len(pairs), 2, dtype=torch.float64, device=engine.device)
        engine.eval()
        with torch.no_grad():
            for idx in self.rank_batches(len(pairs)):
                sums, _ = pref.batch_logps(engine, self.batch(split, idx or [0], engine.device))
                if idx:
                    table[idx] = sums.view(2, -1).T.to(torch.float64)
        engine.train()
        if dist.is_initialized():
            dist.all_reduce(table)  # each pair was computed by exactly one rank
        return table.cpu()

    def sizes(self) -> dict[str, int]:
        """Pairs per split."""
        return {s: len(p) for s, p in self.splits.items()}

    def attachments(self) -> dict[str, bytes]:
        """Files for each checkpoint: the precomputed reference (nothing for the other modes)."""
        if self.mode != "precomputed":
            return {}
        from safetensors.torch import save

        return {REFERENCE_FILE: save({s: t.contiguous() for s, t in self.reference.items()})}

    def load(self, body: bytes) -> dict[str, Any]:
        """The reference tables of a checkpoint, checked against the pairs of this run."""
        from safetensors.torch import load

        tables = load(body)
        for split, n in self.sizes().items():
            got = tables.get(split)
            if got is None or got.shape[0] != n:
                raise BadInputError(
                    f"the checkpoint's reference log-probs cover "
                    f"{None if got is None else got.shape[0]} {split} pairs, the data has {n}"
                )
        return {s: tables[s] for s in self.sizes()}

    # -- reporting -----------------------------------------------------------------------------
    def progress(self) -> dict[str, Any]:
        """status.progress.preference: the reference, the last step's and last evaluation's
        rewards, margin and accuracy (eval* from the validation pairs)."""
        out: dict[str, Any] = {"reference": self.mode}
        train, evals = self.train_summary or {}, self.eval_summary or {}
        out.update({k: v for k, v in train.items() if k != "loss"})
        out.update({"eval" + k[0].upper() + k[1:]: v for k, v in evals.items() if k != "loss"})
        return out

    def card(self) -> dict[str, Any]:
        """The run card's preference section."""
        return {
            **self.cfg.model_dump(),
            "reference": self.mode,
            "reference_seconds": self.reference_seconds,
            "pairs": self.sizes(),
            "packed": self.packed,
            "last_step": self.train_summary,
            "evals": self.evals,
        }


def make(
    cfg: Any,
    data: Dataset,
    tokenizer: Any,
    varlen: bool,
    rank: int,
    world: int,
    continues_adapter: bool = False,
) -> Dpo:
    """The objective of a TrainerConfig with objective dpo (continues_adapter: the model source
    was a LoRA adapter that this run trains on)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return Dpo(
        cfg.method.preference,
        cfg.method.type,
        data,
        pad,
        cfg.data.packing,
        varlen,
        cfg.training.micro_batch_size,
        rank,
        world,
        continues_adapter,
    )
