"""harness.eventually: the one poll-until helper of the k8s and e2e tests."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from harness import WaitTimeout, eventually

pytestmark = pytest.mark.unit


def answers(values: Iterable[Any]) -> tuple[Callable[[], Any], list[Any]]:
    """A check that returns `values` in turn, and the list of what it has returned so far."""
    pending, seen = iter(values), []

    def check() -> Any:
        seen.append(next(pending))
        return seen[-1]

    return check, seen


def test_returns_the_first_truthy_value_and_stops_polling() -> None:
    check, seen = answers([None, False, 0, [], {"phase": "Running"}, "never reached"])
    assert eventually(check, 5, "phase Running", poll=0.001) == {"phase": "Running"}
    assert seen == [None, False, 0, [], {"phase": "Running"}]


def test_a_check_true_at_once_needs_no_time_budget() -> None:
    assert eventually(lambda: 7, 0, "seven") == 7


def test_an_error_from_the_check_propagates_at_once_without_retry() -> None:
    calls = []

    def check() -> bool:
        calls.append(1)
        raise AssertionError("job j failed: OOMKilled")

    started = time.monotonic()
    with pytest.raises(AssertionError, match="OOMKilled") as err:
        eventually(check, 30, "phase Running")
    assert not isinstance(err.value, WaitTimeout)
    assert calls == [1]
    assert time.monotonic() - started < 5


def test_timeout_names_what_was_awaited_the_budget_and_the_last_value() -> None:
    check, seen = answers(iter(lambda: [], object()))  # always an empty list
    with pytest.raises(WaitTimeout) as err:
        eventually(check, 0.05, "2 worker pods", poll=0.01)
    assert (
        str(err.value) == "timed out after 0.05s waiting for 2 worker pods (last check returned [])"
    )
    assert isinstance(err.value, AssertionError), "callers catch AssertionError to add context"
    assert len(seen) >= 2, "checked again after the deadline"


def test_timeout_appends_the_tail_of_the_log(tmp_path: Path) -> None:
    log = tmp_path / "operator.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    with pytest.raises(WaitTimeout) as err:
        eventually(lambda: False, 0, "operator up", log)
    message = str(err.value)
    assert message.startswith("timed out after 0s waiting for operator up")
    assert f"{log}:\nline 60\n" in message and message.endswith("line 99")
    assert "line 59" not in message


def test_timeout_with_a_missing_log_still_names_what_was_awaited(tmp_path: Path) -> None:
    with pytest.raises(
        WaitTimeout, match=r"^timed out after 0s waiting for operator up .*False\)$"
    ):
        eventually(lambda: False, 0, "operator up", tmp_path / "absent.log")
