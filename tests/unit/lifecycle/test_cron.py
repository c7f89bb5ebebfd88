"""Cron schedules as CronJob reads them: fields, names, steps, macros, the day-of-month /
day-of-week rule, time zones, and the latest due time after a gap."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from kubetune_operator.lifecycle import cron

pytestmark = pytest.mark.unit


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    "expr, after, expected",
    [
        ("*/15 * * * *", "2026-03-01T10:07:00", "2026-03-01T10:15:00"),
        ("0 3 * * *", "2026-03-01T03:00:00", "2026-03-02T03:00:00"),  # strictly after
        ("30 2 1 * *", "2026-03-15T00:00:00", "2026-04-01T02:30:00"),
        ("0 0 * * MON-FRI", "2026-03-07T12:00:00", "2026-03-09T00:00:00"),  # Saturday -> Monday
        ("0 0 * * 7", "2026-03-02T00:00:00", "2026-03-08T00:00:00"),  # 7 is Sunday
        ("0 9 13 * 5", "2026-03-01T00:00:00", "2026-03-06T09:00:00"),  # day 13 OR a Friday
        ("0 0 29 2 *", "2026-03-01T00:00:00", "2028-02-29T00:00:00"),  # leap day
        ("5 4 * jan,jul *", "2026-03-01T00:00:00", "2026-07-01T04:05:00"),
        ("@hourly", "2026-03-01T10:59:30", "2026-03-01T11:00:00"),
        ("@weekly", "2026-03-01T00:00:00", "2026-03-08T00:00:00"),
        ("0-10/5 1 * * *", "2026-03-01T01:05:00", "2026-03-01T01:10:00"),
    ],
)
def test_next_time(expr: str, after: str, expected: str) -> None:
    assert cron.next_time(cron.parse(expr), at(after)) == at(expected)


def test_time_zone_shifts_the_wall_clock() -> None:
    sched = cron.parse("0 3 * * *", "Europe/Berlin")  # 03:00 CET is 02:00 UTC in March
    assert cron.next_time(sched, at("2026-03-01T00:00:00")) == at("2026-03-01T02:00:00")


@pytest.mark.parametrize(
    "expr, zone, message",
    [
        ("0 3 * *", None, "needs 5 fields"),
        ("61 * * * *", None, "minute 61 is outside 0-59"),
        ("0 3 * * funday", None, "day of week 'funday' is not a number"),
        ("0 5-1 * * *", None, "runs backwards"),
        ("0 3 * * *", "Mars/Olympus", "spec.timeZone: unknown time zone"),
    ],
)
def test_bad_schedules_name_the_field(expr: str, zone: str | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cron.parse(expr, zone)


@pytest.mark.parametrize(
    "expr, since, now, expected",
    [
        ("*/5 * * * *", "2026-03-01T10:00:00", "2026-03-01T10:04:59", None),
        ("*/5 * * * *", "2026-03-01T10:00:00", "2026-03-01T10:05:00", "2026-03-01T10:05:00"),
        # the operator was down for a day: only the latest missed time is owed
        ("*/5 * * * *", "2026-03-01T10:00:00", "2026-03-02T11:03:00", "2026-03-02T11:00:00"),
        ("0 0 1 1 *", "2025-12-01T00:00:00", "2026-06-01T00:00:00", "2026-01-01T00:00:00"),
        ("0 3 * * *", "2026-03-01T03:00:00", "2026-03-01T20:00:00", None),
    ],
)
def test_latest_due(expr: str, since: str, now: str, expected: str | None) -> None:
    due = cron.latest_due(cron.parse(expr), at(since), at(now))
    assert due == (at(expected) if expected else None)
