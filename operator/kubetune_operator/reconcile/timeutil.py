"""RFC 3339 time and Go-style durations, as the Kubernetes API spells them."""

from __future__ import annotations

import re
from datetime import UTC, datetime

_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(h|m|s)")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0}


def parse_time(value: str | None) -> datetime | None:
    """A timestamp from the API (…Z or with offset), None for missing or malformed."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def format_time(when: datetime) -> str:
    """RFC 3339 in UTC with second precision, the way the apiserver writes it."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration such as 30m, 1h30m, 45s, 2.5s."""
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"invalid duration {text!r} (expected e.g. 30m, 1h30m, 45s)")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def seconds_until(
    since: datetime | None, limit_seconds: float | None, now: datetime
) -> float | None:
    """Seconds left of a limit counted from `since` (<= 0: reached); None when no limit applies
    or its clock has not started. The one countdown of the deadline, TTL, stall and startup
    policies."""
    if limit_seconds is None or since is None:
        return None
    return limit_seconds - (now - since).total_seconds()
