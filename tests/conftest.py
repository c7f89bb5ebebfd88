"""Shared pytest setup: marker bookkeeping, GPU skipping, and the fixture plugins."""

from __future__ import annotations

import collections
import os

import pytest

# Shared fixtures live in tests/fixtures/<name>.py, one module per service.
pytest_plugins = [
    "tests.fixtures.controlplane",
    "tests.fixtures.s3",
    "tests.fixtures.nodeagent",
]

MARKERS = ("unit", "k8s", "e2e", "gpu", "slow")

# Tests talk only to loopback; make sure no proxy setting sends them elsewhere.
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
os.environ.setdefault("no_proxy", "127.0.0.1,localhost")


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip gpu tests cleanly where CUDA is absent."""
    gpu_items = [i for i in items if i.get_closest_marker("gpu")]
    if gpu_items and not _has_cuda():
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in gpu_items:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # type: ignore[no-untyped-def]
    """Print how many tests ran (passed or failed) per marker, so CI logs show the coverage."""
    counts: dict[str, collections.Counter[str]] = {m: collections.Counter() for m in (*MARKERS, "unmarked")}
    for outcome in ("passed", "failed", "skipped", "error"):
        for rep in terminalreporter.stats.get(outcome, []):
            if getattr(rep, "when", "call") not in ("call", "setup") or (outcome == "passed" and rep.when != "call"):
                continue
            keywords = getattr(rep, "keywords", {})
            marks = [m for m in MARKERS if m in keywords] or ["unmarked"]
            for m in marks:
                counts[m][outcome] += 1
    terminalreporter.write_sep("=", "tests per marker")
    for m, c in counts.items():
        if sum(c.values()):
            terminalreporter.write_line(
                f"{m:9s} passed={c['passed']} failed={c['failed']} skipped={c['skipped']} errors={c['error']}"
            )
