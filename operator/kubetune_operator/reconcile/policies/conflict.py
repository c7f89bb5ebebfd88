"""Name conflicts: a child's name is held by an object the job does not own.

The controller creates nothing over another owner's object; it reports why in the next pass
(Pass.conflict), and this step keeps the job Pending with a Warning and condition NameConflict
while it keeps trying (the namesake may be removed). The condition turns False once every child
of the job is its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kubetune_operator.reconcile.conditions import condition_status

if TYPE_CHECKING:
    from kubetune_operator.reconcile.decision import Pass

# How soon to try again to create children whose names another object holds.
CONFLICT_RETRY_SECONDS = 10.0


def step(p: Pass) -> bool:
    """Pending (NameConflict) while the last creation met a namesake; resolved after."""
    if p.conflict is not None:
        p.phase("Pending", "NameConflict", p.conflict, warning=True)
        p.cond("NameConflict", True, "NameConflict", p.conflict)
        p.d.requeue(CONFLICT_RETRY_SECONDS)
        return True
    if condition_status(p.st.get("conditions", []), "NameConflict") == "True":
        p.cond("NameConflict", False, "Resolved", "every child of the job is its own")
    return False
