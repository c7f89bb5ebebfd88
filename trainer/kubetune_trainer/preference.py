"""Preference tuning (objective dpo): the log-probability of each response, the loss variants and
their implicit rewards, and where the reference comes from.

A pair is one data.Example: the chosen sequence, then the rejected one (positions restart at it;
`chosen_length` marks where), labels on response tokens only. A micro-batch of B pairs is 2B
sequences, chosen_1..chosen_B then rejected_1..rejected_B. Losses and rewards are TRL's
(DPOTrainer for sigmoid, ipo, hinge and robust; CPOTrainer's simpo with cpo_alpha 0), and a test
holds them to it on a fixed batch.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Literal

from .config import PreferenceConfig
from .data import IGNORE, Example
from .errors import BadInputError

Reference = Literal["precomputed", "adapter-disabled", "none"]
REFERENCE_FREE = ("simpo",)
SMOOTHED = ("sigmoid", "robust", "simpo")  # the variants label smoothing applies to


def reference_mode(method_type: str, loss: str, continues_adapter: bool = False) -> Reference:
    """Where reference log-probs come from, chosen by memory.

    none: SimPO needs no reference. adapter-disabled (lora, qlora): the frozen base under a new
    adapter is the reference, so a forward with the adapter switched off costs no memory at all.
    precomputed (full, partial, and an adapter continued from an earlier job, whose start is not
    the bare base): one no-grad pass over the data before the first step, 16 bytes a pair kept
    with every checkpoint; a frozen copy would hold the weights a second time (sharded by ZeRO-3,
    still 1/world of the model per rank) and run a forward on every step.
    """
    if loss in REFERENCE_FREE:
        return "none"
    adapters = method_type in ("lora", "qlora")
    return "adapter-disabled" if adapters and not continues_adapter else "precomputed"


def check_objective(objective: str, data_format: str) -> None:
    """The objective and the records must agree: dpo learns from pairs, sft from everything else."""
    if objective == "dpo" and data_format != "preference":
        raise BadInputError(
            f"spec.method.objective dpo needs preference records ({{prompt, chosen, rejected}}); "
            f"the data is {data_format}"
        )
    if objective != "dpo" and data_format == "preference":
        raise BadInputError(
            "preference records ({prompt, chosen, rejected}) need spec.method.objective dpo"
        )


def halves(ex: Example) -> tuple[tuple[list[int], list[int]], tuple[list[int], list[int]]]:
    """((ids, labels) of the chosen sequence, (ids, labels) of the rejected one)."""
    n = ex.chosen_length
    if n is None:
        raise ValueError("not a preference pair")
    return (ex.ids[:n], ex.labels[:n]), (ex.ids[n:], ex.labels[n:])


def collate_pairs(pairs: list[Example], pad_id: int, packed: bool) -> dict[str, Any]:
    """Model inputs for a micro-batch of pairs, plus `labels` (IGNORE outside the responses) and
    `sequence` (which of the 2B sequences a token is in; -1 for padding).

    padded: one row a sequence, right-padded to the longest, with an attention mask.
    packed: all 2B sequences in one row, positions restarting at each, no padding and no mask:
    exact, because transformers' attention masks (and the varlen kernel) keep sequences apart by
    their position_ids; each sequence's first token is never predicted from the one before.
    """
    import torch

    seqs = [halves(p)[0] for p in pairs] + [halves(p)[1] for p in pairs]
    if packed:
        ids = [t for s, _ in seqs for t in s]
        labels = [IGNORE if i == 0 else t for _, lab in seqs for i, t in enumerate(lab)]
        return {
            "input_ids": torch.tensor([ids], dtype=torch.long),
            "position_ids": torch.tensor(
                [[i for s, _ in seqs for i in range(len(s))]], dtype=torch.long
            ),
            "labels": torch.tensor([labels], dtype=torch.long),
            "sequence": torch.tensor(
                [[n for n, (s, _) in enumerate(seqs) for _ in s]], dtype=torch.long
            ),
        }
    width = max(len(s) for s, _ in seqs)
    pad = [width - len(s) for s, _ in seqs]
    return {
        "input_ids": torch.tensor([s + [pad_id] * k for (s, _), k in zip(seqs, pad, strict=True)]),
        "attention_mask": torch.tensor([[1] * len(s) + [0] * k for (s, _), k in zip(seqs, pad, strict=True)]),
        "labels": torch.tensor([lab + [IGNORE] * k for (_, lab), k in zip(seqs, pad, strict=True)]),
        "sequence": torch.tensor(
            [[n] * len(s) + [-1] * k for n, ((s, _), k) in enumerate(zip(seqs, pad, strict=True))]
        ),
    }  # fmt: skip


def model_inputs(batch: dict[str, Any]) -> dict[str, Any]:
    """What the model's forward takes from a pair batch (varlen boundaries included)."""
    return {k: v for k, v in batch.items() if k not in ("labels", "sequence")}


LOGP_CHUNK = 4096
"""Positions whose logits are turned to fp32 at once: a packed row of 16 sequences of 2048
tokens over a 128k vocabulary would otherwise take 16 GiB in fp32."""


def token_logps(logits: Any, targets: Any) -> Any:
    """log p(target) at every position, in fp32, a chunk of positions at a time."""
    import torch

    rows = []
    for row_logits, row_targets in zip(logits, targets, strict=True):
        parts = []
        for start in range(0, row_logits.shape[0], LOGP_CHUNK):
            chunk = row_logits[start : start + LOGP_CHUNK].float()
            picked = chunk.gather(-1, row_targets[start : start + LOGP_CHUNK].unsqueeze(-1))
            parts.append(picked.squeeze(-1) - torch.logsumexp(chunk, dim=-1))
        rows.append(torch.cat(parts))
    return torch.stack(rows)


def sequence_logps(logits: Any, labels: Any, sequence: Any, n: int) -> tuple[Any, Any]:
    """(sum of log-probs of each sequence's response tokens, their number), for n sequences."""
    import torch

    targets = labels[:, 1:]
    mask = targets != IGNORE
    per_token = token_logps(logits[:, :-1], targets.clamp(min=0))
    owner = sequence[:, 1:][mask]
    sums = torch.zeros(n, dtype=per_token.dtype, device=per_token.device)
    sums = sums.index_add(0, owner, per_token[mask])
    counts = torch.bincount(owner, minlength=n).to(per_token.dtype)
    return sums, counts


def batch_logps(model: Any, batch: dict[str, Any]) -> tuple[Any, Any]:
    """One forward of the policy (or reference) over a pair batch: per-sequence sums and counts."""
    n = int(batch["sequence"].max()) + 1
    logits = model(**model_inputs(batch), use_cache=False).logits
    return sequence_logps(logits, batch["labels"], batch["sequence"], n)


def pair_losses(
    cfg: PreferenceConfig, policy: Any, counts: Any, reference: Any | None
) -> tuple[Any, Any, Any]:
    """(loss, chosen reward, rejected reward) of each pair from 2B per-sequence log-prob sums.

    sigmoid: DPO, with conservative-DPO label smoothing; ipo: squared, on per-token log-ratios;
    hinge: SLiC; robust: rDPO with label_smoothing as the flip rate; simpo: reference-free, on
    per-token log-probs, with the margin gamma. sft_weight adds that share of the batch's
    next-token loss on the chosen answers (RPO; CPO with simpo), which keeps them likely. Rewards
    are beta x log-ratio (simpo: beta x mean log-prob), as TRL logs them.
    """
    loss, chosen, rejected = preference_losses(cfg, policy, counts, reference)
    if cfg.sft_weight:
        n_chosen = counts.chunk(2)[0]
        loss = loss + cfg.sft_weight * -policy.chunk(2)[0].sum() / n_chosen.sum().clamp(min=1)
    return loss, chosen, rejected


def preference_losses(
    cfg: PreferenceConfig, policy: Any, counts: Any, reference: Any | None
) -> tuple[Any, Any, Any]:
    """The preference term of pair_losses, per variant."""
    import torch.nn.functional as F

    beta, eps = cfg.beta, cfg.label_smoothing
    chosen, rejected = policy.chunk(2)
    n_chosen, n_rejected = counts.clamp(min=1).chunk(2)

    def smoothed(h: Any) -> Any:
        return -(1 - eps) * F.logsigmoid(beta * h) - eps * F.logsigmoid(-beta * h)

    if cfg.loss == "simpo":
        avg_c, avg_r = chosen / n_chosen, rejected / n_rejected
        return smoothed(avg_c - avg_r - cfg.simpo_gamma / beta), beta * avg_c, beta * avg_r
    if reference is None:
        raise ValueError(f"loss {cfg.loss} needs reference log-probs")
    ref_chosen, ref_rejected = reference.chunk(2)
    ratio_c, ratio_r = chosen - ref_chosen, rejected - ref_rejected
    h = ratio_c - ratio_r
    if cfg.loss == "sigmoid":
        loss = smoothed(h)
    elif cfg.loss == "ipo":
        loss = (ratio_c / n_chosen - ratio_r / n_rejected - 1 / (2 * beta)) ** 2
    elif cfg.loss == "hinge":
        loss = F.relu(1 - beta * h)
    else:  # robust
        loss = (-(1 - eps) * F.logsigmoid(beta * h) + eps * F.logsigmoid(-beta * h)) / (1 - 2 * eps)
    return loss, beta * ratio_c.detach(), beta * ratio_r.detach()


@dataclass
class Totals:
    """Sums over pairs (one rank's until reduced): loss, rewards, pairs ranked right."""

    pairs: float = 0.0
    loss: float = 0.0
    chosen: float = 0.0
    rejected: float = 0.0
    correct: float = 0.0

    def add(self, loss: Any, chosen: Any, rejected: Any, weight: float = 1.0) -> None:
        """Count a micro-batch's per-pair values (weight 0: a rank's filler batch)."""
        self.pairs += weight * len(loss)
        self.loss += weight * float(loss.detach().sum())
        self.chosen += weight * float(chosen.sum())
        self.rejected += weight * float(rejected.sum())
        self.correct += weight * float((chosen > rejected).sum())

    def values(self) -> list[float]:
        """The sums, in field order (for an all-reduce)."""
        return [getattr(self, f.name) for f in fields(self)]

    def summary(self) -> dict[str, float] | None:
        """Means over pairs: loss, rewards, margin, and the fraction ranked right (ties wrong)."""
        if not self.pairs:
            return None
        n = self.pairs
        return {
            "loss": self.loss / n,
            "rewardChosen": self.chosen / n,
            "rewardRejected": self.rejected / n,
            "rewardMargin": (self.chosen - self.rejected) / n,
            "accuracy": self.correct / n,
        }


def reduced(totals: Totals, all_sum: Any) -> Totals:
    """Totals summed over ranks (a collective)."""
    return Totals(*all_sum(totals.values()))
