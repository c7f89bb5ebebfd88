"""Wait for an effect instead of sleeping a fixed time: controllers, the operator, the node
agent and the S3 server all act asynchronously, so tests poll until what they expect holds."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from harness.controlplane import log_tail

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """The awaited condition did not hold in time. An AssertionError, so a timed-out wait fails
    a test like a failed assert, and callers that catch AssertionError to add context see it."""


def eventually(
    check: Callable[[], T | None],
    timeout: float,
    what: str,
    log: Path | None = None,
    *,
    poll: float = 0.25,
) -> T:
    """Call `check` every `poll` seconds until it returns something truthy, and return that.

    `check` runs at least once and once more after the deadline, so a slow last poll still
    counts. An exception from `check` is not retried: it propagates at once, which is how
    callers fail early (say, on a job that reached Failed while they wait for Running).
    On timeout, raise WaitTimeout naming `what`, the timeout and the last value `check`
    returned, followed by the tail of `log` when given (the component's own account).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise WaitTimeout(timeout_message(what, timeout, value, log))
        time.sleep(poll)


def timeout_message(what: str, timeout: float, last: object, log: Path | None = None) -> str:
    """What was awaited, for how long, what `check` last said, and the log's last lines."""
    message = f"timed out after {timeout:g}s waiting for {what} (last check returned {last!r})"
    tail = log_tail(log, lines=40) if log is not None else ""
    return f"{message}\n{log}:\n{tail}" if tail else message
