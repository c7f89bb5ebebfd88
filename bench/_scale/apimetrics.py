"""API server request counts from its /metrics (apiserver_request_total), scraped over
loopback with the admin client certificate, and operator counters from the operator's /metrics.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

Counts = dict[tuple[str, ...], float]
_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?P<labels>.*)\})?\s+(?P<value>\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def samples(text: str, metric: str) -> Iterable[tuple[dict[str, str], float]]:
    """(labels, value) of every sample of `metric` in Prometheus text format."""
    for line in text.splitlines():
        if not line.startswith(metric):
            continue
        m = _SAMPLE.match(line)
        if m is None or m.group("name") != metric:
            continue
        labels = dict(_LABEL.findall(m.group("labels") or ""))
        yield labels, float(m.group("value"))


def requests_by(text: str, *keys: str) -> Counts:
    """apiserver_request_total summed by the given labels (e.g. verb, code)."""
    return sum_by(text, "apiserver_request_total", *keys)


def mean_seconds(sums: Counts, counts: Counts) -> dict[tuple[str, ...], float]:
    """Mean of a histogram per key from its _sum and _count (keys without requests left out)."""
    return {k: sums.get(k, 0.0) / n for k, n in counts.items() if n > 0}


def sum_by(text: str, metric: str, *keys: str) -> Counts:
    """Every sample of `metric` summed by the given labels."""
    out: Counts = {}
    for labels, value in samples(text, metric):
        key = tuple(labels.get(k, "") for k in keys)
        out[key] = out.get(key, 0.0) + value
    return out


def total(text: str, metric: str) -> float:
    """Sum of every sample of `metric` (0 when absent)."""
    return sum(value for _, value in samples(text, metric))


def delta(after: Counts, before: Counts) -> Counts:
    """Per-key increase between two scrapes (counters never go down while the server runs)."""
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0) > 0}


def server_errors(by_code: Counts) -> int:
    """Requests answered 429 or 5xx (throttled or broken, never the client's fault)."""
    return int(sum(v for (code,), v in by_code.items() if code == "429" or code.startswith("5")))


def buckets(text: str, metric: str, **match: str) -> Counts:
    """Cumulative histogram buckets of `metric` by `le`, summed over the samples whose labels
    match every `match` item (e.g. verb="PATCH", resource="finetunejobs")."""
    out: Counts = {}
    for labels, value in samples(text, metric):
        if all(labels.get(k) == v for k, v in match.items()) and "le" in labels:
            out[(labels["le"],)] = out.get((labels["le"],), 0.0) + value
    return out


def quantile(q: float, cumulative: Counts) -> float | None:
    """Prometheus' histogram_quantile: the bucket holding the q-th observation, interpolated
    linearly inside it; None without observations. Bucket bounds limit the precision."""
    bounds = sorted((float(le), n) for (le,), n in cumulative.items())
    if not bounds or bounds[-1][1] <= 0:
        return None
    rank = q * bounds[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in bounds:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            width = count - lower_count
            return lower_bound + (bound - lower_bound) * (
                (rank - lower_count) / width if width else 1.0
            )
        lower_bound, lower_count = bound, count
    return lower_bound
