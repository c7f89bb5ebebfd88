"""The Argo CD health check (Lua) gives the right health for every FineTuneJob state."""

from __future__ import annotations

import re
from typing import Any

import pytest

from harness.binaries import REPO_ROOT

pytestmark = pytest.mark.unit

lupa = pytest.importorskip("lupa", reason="the Lua runtime comes from the lupa package")

SCRIPT = REPO_ROOT / "docs" / "argocd" / "finetunejob-health.lua"
GITOPS = REPO_ROOT / "docs" / "gitops.md"


def health(obj: dict[str, Any]) -> dict[str, str]:
    """Run the script the way Argo CD does: `obj` is a global, the script returns a table."""
    lua = lupa.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = to_lua(lua, obj)
    result = lua.execute(SCRIPT.read_text())
    return {k: result[k] for k in ("status", "message")}


def to_lua(lua: Any, value: Any) -> Any:
    """Nested dicts and lists as Lua tables (Argo CD hands the object over the same way)."""
    if isinstance(value, dict):
        return lua.table_from({k: to_lua(lua, v) for k, v in value.items()})
    if isinstance(value, list):
        return lua.table_from([to_lua(lua, v) for v in value])
    return value


def job(status: dict[str, Any] | None = None, generation: int = 1) -> dict[str, Any]:
    obj: dict[str, Any] = {"metadata": {"name": "j", "generation": generation}, "spec": {}}
    if status is not None:
        obj["status"] = status
    return obj


CASES = [
    (job(), "Progressing", "Waiting for the kubetune operator"),
    (job({"phase": "Pending", "observedGeneration": 1, "message": "waiting for 2 workers"}), "Progressing", "waiting for 2 workers"),
    (job({"phase": "Queued", "message": "LocalQueue q doesn't exist"}), "Progressing", "LocalQueue q doesn't exist"),
    (job({"phase": "Running", "observedGeneration": 1}, generation=2), "Progressing", "generation 2"),
    (
        job({"phase": "Running", "observedGeneration": 1,
             "progress": {"summary": "120/1000 (12%)", "loss": 1.8423, "eta": "2h3m"}}),
        "Progressing", "Running 120/1000 (12%), loss 1.842, ETA 2h3m",
    ),
    (job({"phase": "Restarting", "lastFailure": {"reason": "OOMKilled"}}), "Progressing", "Restarting after OOMKilled"),
    (job({"phase": "Suspended", "message": "suspended at step 300"}), "Suspended", "suspended at step 300"),
    (job({"phase": "Succeeded", "output": {"uri": "s3://m/out"}}), "Healthy", "model at s3://m/out"),
    (
        job({"phase": "Failed", "lastFailure": {"reason": "BackoffLimitExceeded", "message": "3 attempts failed"}}),
        "Degraded", "BackoffLimitExceeded: 3 attempts failed",
    ),
]  # fmt: skip


@pytest.mark.parametrize("obj, status, message", CASES)
def test_health_per_state(obj: dict[str, Any], status: str, message: str) -> None:
    got = health(obj)
    assert got["status"] == status
    assert message in got["message"]


def test_docs_embed_the_tested_script() -> None:
    """docs/gitops.md shows exactly the script this test runs (indented inside argocd-cm)."""
    text = GITOPS.read_text()
    block = re.search(r"FineTuneJob: \|\n(.*?)\n```", text, re.S)
    assert block, "no health check block in docs/gitops.md"
    embedded = "\n".join(line.removeprefix("    ") for line in block.group(1).splitlines())
    assert embedded.strip() == SCRIPT.read_text().strip()
