"""Cron schedules as CronJob reads them: five fields (minute, hour, day of month, month, day of
week) with *, lists, ranges, steps and month and day names, or a macro (@hourly ... @yearly).

As in Vixie cron and CronJob, a day matches when both day fields match, except that when both
are restricted (neither is *) either one matching is enough. Times are computed on the wall
clock of the schedule's time zone, at minute resolution.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
MONTHS = {
    m: i
    for i, m in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], 1
    )
}
DAYS = {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
# (name, lowest, highest, names) of the five fields; day of week 7 is Sunday too.
FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, MONTHS),
    ("day of week", 0, 7, DAYS),
)
# How far back the latest due time is looked for, widening only while none is found.
LOOKBACK = (timedelta(hours=2), timedelta(days=2), timedelta(days=32), timedelta(days=400))


@dataclass(frozen=True)
class Cron:
    """A parsed schedule: the allowed values of each field."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    any_day: bool  # day of month is *
    any_weekday: bool  # day of week is *
    zone: ZoneInfo

    def day_matches(self, when: datetime) -> bool:
        """Whether a date is a scheduled day (the two day fields, combined as cron does)."""
        dom = when.day in self.days
        dow = when.isoweekday() % 7 in self.weekdays
        if self.any_day or self.any_weekday:
            return dom and dow
        return dom or dow


def _number(text: str, lo: int, hi: int, names: dict[str, int], field: str) -> int:
    value = names.get(text.lower()) if text.isalpha() else None
    if value is None:
        if not text.isdigit():
            raise ValueError(f"spec.schedule: {field} {text!r} is not a number")
        value = int(text)
    if not lo <= value <= hi:
        raise ValueError(f"spec.schedule: {field} {value} is outside {lo}-{hi}")
    return value


def parse_field(text: str, lo: int, hi: int, names: dict[str, int], field: str) -> set[int]:
    """The values one field allows: lists of *, N, N-M, each with an optional /step."""
    out: set[int] = set()
    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = _number(step_text, 1, hi, {}, field + " step") if step_text else 1
        if base in ("*", "?"):
            start, end = lo, hi
        elif "-" in base:
            a, _, b = base.partition("-")
            start, end = _number(a, lo, hi, names, field), _number(b, lo, hi, names, field)
            if start > end:
                raise ValueError(f"spec.schedule: {field} range {base!r} runs backwards")
        else:
            start = _number(base, lo, hi, names, field)
            end = hi if step_text else start
        out.update(range(start, end + 1, step))
    return out


def parse(expr: str, time_zone: str | None = None) -> Cron:
    """A schedule from its text; ValueError naming spec.schedule or spec.timeZone when bad."""
    text = MACROS.get(expr.strip().lower(), expr.strip())
    parts = text.split()
    if len(parts) != 5:
        raise ValueError(f"spec.schedule: {expr!r} needs 5 fields (minute hour day month weekday)")
    try:
        zone = ZoneInfo(time_zone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"spec.timeZone: unknown time zone {time_zone!r}") from None
    values = [
        parse_field(p, lo, hi, names, f)
        for p, (f, lo, hi, names) in zip(parts, FIELDS, strict=True)
    ]
    weekdays = {d % 7 for d in values[4]}
    return Cron(
        frozenset(values[0]),
        frozenset(values[1]),
        frozenset(values[2]),
        frozenset(values[3]),
        frozenset(weekdays),
        parts[2] in ("*", "?"),
        parts[4] in ("*", "?"),
        zone,
    )


def next_time(cron: Cron, after: datetime) -> datetime | None:
    """The first scheduled time strictly after `after` (UTC), or None within five years."""
    local = after.astimezone(cron.zone).replace(tzinfo=None, second=0, microsecond=0)
    t = local + timedelta(minutes=1)
    horizon = local + timedelta(days=5 * 366)
    while t < horizon:
        if t.month not in cron.months:
            t = (t.replace(day=1) + timedelta(days=32)).replace(day=1, hour=0, minute=0)
        elif not cron.day_matches(t):
            t = (t + timedelta(days=1)).replace(hour=0, minute=0)
        elif t.hour not in cron.hours:
            t = (t + timedelta(hours=1)).replace(minute=0)
        elif t.minute not in cron.minutes:
            t += timedelta(minutes=1)
        else:
            return t.replace(tzinfo=cron.zone).astimezone(UTC)
    return None


def latest_due(cron: Cron, since: datetime, now: datetime) -> datetime | None:
    """The latest scheduled time in (since, now]: the one run a late start still owes, as
    CronJob starts only the most recent of the times it missed."""
    for window in LOOKBACK:
        start = max(since, now - window)
        found, t = None, next_time(cron, start)
        while t is not None and t <= now:
            found, t = t, next_time(cron, t)
        if found is not None or start == since:
            return found
    return None
