"""A new job: condition Created, once."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kubetune_operator.reconcile.decision import Pass


def step(p: Pass) -> bool:
    """The first pass of a job marks it accepted."""
    if not p.st.get("conditions"):
        p.cond("Created", True, "Created", "the job was accepted")
    return False
