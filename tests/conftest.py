"""Shared pytest setup: marker bookkeeping, GPU skipping, and the fixture plugins."""

from __future__ import annotations

import collections
import os
from pathlib import Path

import pytest

# Shared fixtures live in tests/fixtures/<name>.py, one module per service.
pytest_plugins = [
    "tests.fixtures.controlplane",
    "tests.fixtures.s3",
    "tests.fixtures.kueue",
    "tests.fixtures.mlflow",
]

MARKERS = ("unit", "k8s", "e2e", "gpu", "slow", "long")

# Tests talk only to loopback; make sure no proxy setting sends them elsewhere.
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
os.environ.setdefault("no_proxy", "127.0.0.1,localhost")


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


_MARKS_BY_NODEID: dict[str, list[str]] = {}


KINDS = ("unit", "k8s", "e2e", "gpu")
TESTS_ROOT = Path(__file__).resolve().parent


def kind_of_folder(item: pytest.Item) -> str:
    """The kind a test's folder stands for: the first folder under tests/."""
    return Path(str(item.path)).resolve().relative_to(TESTS_ROOT).parts[0]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse tests without a kind marker or outside their kind's folder, remember each test's
    markers, skip gpu tests without CUDA."""
    unmarked = []
    for item in items:
        marks = [m for m in MARKERS if item.get_closest_marker(m)]
        _MARKS_BY_NODEID[item.nodeid] = marks
        if not set(marks) & {"unit", "k8s", "e2e", "gpu", "slow"}:
            unmarked.append(item.nodeid)
    if unmarked:
        raise pytest.UsageError(
            "tests without a marker (unit, k8s, e2e, gpu, slow): " + ", ".join(unmarked)
        )
    misplaced = [i.nodeid for i in items if kind_of_folder(i) not in _MARKS_BY_NODEID[i.nodeid]]
    if misplaced:
        raise pytest.UsageError(
            "tests whose folder is not their kind (tests/<kind>/ holds the tests marked <kind>): "
            + ", ".join(misplaced)
        )
    gpu_items = [i for i in items if i.get_closest_marker("gpu")]
    if gpu_items and not _has_cuda():
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in gpu_items:
            item.add_marker(skip)


def _counted(rep: pytest.TestReport, outcome: str) -> bool:
    """One report per test: the call phase, or the setup phase where it skipped or errored."""
    if outcome == "passed":
        return rep.when == "call"
    return rep.when in ("call", "setup")


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # type: ignore[no-untyped-def]
    """Print how many tests ran (passed or failed) per marker, so CI logs show the coverage."""
    counts: dict[str, collections.Counter[str]] = {m: collections.Counter() for m in MARKERS}
    for outcome in ("passed", "failed", "skipped", "error"):
        for rep in terminalreporter.stats.get(outcome, []):
            if not isinstance(rep, pytest.TestReport) or not _counted(rep, outcome):
                continue
            for m in _MARKS_BY_NODEID.get(rep.nodeid, []):
                counts[m][outcome] += 1
    terminalreporter.write_sep("=", "tests per marker")
    for m, c in counts.items():
        if sum(c.values()):
            terminalreporter.write_line(
                f"{m:9s} passed={c['passed']} failed={c['failed']} skipped={c['skipped']} errors={c['error']}"
            )
