"""The quality gate: is a run's model (the candidate) good enough to replace the current one?

Both are scored on the same fixed benchmark by the run's own trainer (spec.benchmark of the
run's job): "before" is the model it continued from, "after" the one it made. When the run
continued from the model that is still promoted, "before" is the current model's score, taken
in the same process as the candidate's. When another run was promoted meanwhile
(concurrencyPolicy Allow), the current model's score is the one recorded when it was promoted,
on the same benchmark (same checksum), and the reason says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubetune_operator.api.schedule import Gate


@dataclass(frozen=True)
class Verdict:
    """The gate's decision and why, in words a person reads in the history."""

    promote: bool
    reason: str


def judge(gate: Gate, candidate: dict[str, Any] | None, current: dict[str, Any] | None) -> Verdict:
    """Promote unless the candidate is worse than the current model by more than the margins."""
    if not candidate or candidate.get("evalLoss") is None:
        return Verdict(False, "the run reported no benchmark score")
    if not current or current.get("evalLoss") is None:
        return Verdict(False, "no score of the current model to compare with")
    new, old = float(candidate["evalLoss"]), float(current["evalLoss"])
    margin = gate.max_eval_loss_increase
    words = [f"benchmark eval loss {new:.4f} vs {old:.4f}"]
    if new > old + margin:
        return Verdict(
            False, f"{words[0]}: worse by {new - old:.4f}, more than the margin {margin:g}"
        )
    if gate.exact_match:
        if candidate.get("exactMatch") is None or current.get("exactMatch") is None:
            return Verdict(False, f"{words[0]}; exact match was not measured")
        em_new, em_old = float(candidate["exactMatch"]), float(current["exactMatch"])
        em_margin = gate.max_exact_match_decrease or 0.0
        words.append(f"exact match {em_new:.1%} vs {em_old:.1%}")
        if em_new < em_old - em_margin:
            return Verdict(
                False,
                f"{'; '.join(words)}: exact match lower by {em_old - em_new:.1%}, more than "
                f"the margin {em_margin:g}",
            )
    return Verdict(True, "; ".join(words) + ": not worse beyond the margin")


def current_scores(
    started_from: str | None,
    before: dict[str, Any] | None,
    promoted: dict[str, Any] | None,
    benchmark_sha256: str | None,
) -> tuple[dict[str, Any] | None, str]:
    """The current model's scores to judge a finished run by, and where they come from."""
    if promoted is None or started_from == promoted.get("uri"):
        return before, "measured by the run on the model it continued"
    if promoted.get("benchmarkSha256") and promoted.get("benchmarkSha256") != benchmark_sha256:
        return None, "the promoted model was scored on another benchmark"
    return promoted.get("scores"), f"recorded when {promoted.get('run')} was promoted"
