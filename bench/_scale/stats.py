"""Percentiles, ratios and the results table: pure arithmetic on measured samples."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank; NaN when there are no samples.

    Nearest rank keeps p99 of a small run an observed value rather than an interpolation.
    """
    if not samples:
        return math.nan
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be within 0..100, got {q}")
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def ratio(ours: float, baseline: float) -> float:
    """ours / baseline; NaN when either is unknown or the baseline is zero."""
    if math.isnan(ours) or math.isnan(baseline) or baseline == 0:
        return math.nan
    return ours / baseline


@dataclass(frozen=True)
class Latency:
    """p50/p99 of one latency, in seconds, with the number of samples."""

    p50: float
    p99: float
    count: int

    @classmethod
    def of(cls, samples: Sequence[float]) -> Latency:
        """Summarise samples (seconds)."""
        return cls(percentile(samples, 50), percentile(samples, 99), len(samples))


def fmt_seconds(value: float) -> str:
    """Seconds with millisecond precision, '-' when unknown."""
    return "-" if math.isnan(value) else f"{value:.3f}"


def fmt_ratio(value: float) -> str:
    """A ratio like 0.85x, '-' when unknown."""
    return "-" if math.isnan(value) else f"{value:.2f}x"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def per_job(counts: Mapping[str, float], jobs: int) -> dict[str, float]:
    """Counts divided by the number of jobs (0 jobs: empty)."""
    if jobs <= 0:
        return {}
    return {key: value / jobs for key, value in counts.items()}
