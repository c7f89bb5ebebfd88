"""A container's processes are all of its mount namespace: a SIGKILL of the pod also reaches
processes that started their own session (as torchrun does with its ranks)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.nodeagent.runtime import mount_namespace, signal_group, signal_namespace

pytestmark = pytest.mark.unit


def _members(ns: str) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "ns" / "mnt") == ns:
                    out.append(int(entry.name))
            except OSError:
                continue
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


def test_sigkill_reaches_processes_that_left_the_group() -> None:
    script = "setsid sleep 300 & exec sleep 300"
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]
    proc = subprocess.Popen(argv, start_new_session=True)
    try:
        ns = mount_namespace(proc.pid)
        if ns is None:
            pytest.skip("cannot create mount namespaces here")
        deadline = time.monotonic() + 5
        while len(_members(ns)) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        escaped = [p for p in _members(ns) if os.getpgid(p) != proc.pid]
        assert escaped, "the setsid child should be outside the container's process group"
        signal_group(proc.pid, signal.SIGKILL)
        proc.wait(5)
        assert all(_alive(p) for p in escaped), "a group kill alone leaves it running"
        signal_namespace(ns, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while any(_alive(p) for p in escaped) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not any(_alive(p) for p in escaped)
    finally:
        proc.kill()
        proc.wait(5)


def test_the_agents_own_namespace_is_never_a_pods() -> None:
    proc = subprocess.Popen(["sleep", "30"])
    try:
        assert mount_namespace(proc.pid, timeout=0.2) is None
    finally:
        proc.kill()
        proc.wait(5)
