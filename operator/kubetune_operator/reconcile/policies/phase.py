"""The phase of an attempt on its way up: Pending -> Initializing -> Running, from its workers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kubetune_operator.reconcile.policies import gang

if TYPE_CHECKING:
    from kubetune_operator.reconcile.decision import Pass


def step(p: Pass) -> bool:
    """Running once every worker runs (or is done); Initializing once all are scheduled;
    Pending (a Warning naming a worker that cannot start, or waiting for the gang) or
    Restarting before that."""
    counts, attempt = p.obs.counts, p.attempt
    nodes = counts["total"]
    problems = [f"{w.name}: {w.waiting_problem}" for w in p.obs.current if w.waiting_problem]
    if counts["running"] + counts["succeeded"] == nodes and not p.obs.missing:
        p.phase("Running", "Running", f"attempt {attempt}: all {nodes} workers running")
        p.cond("Running", True, "AllWorkersRunning", f"attempt {attempt}")
        p.cond("Restarting", False, "Running", f"attempt {attempt} is running")
        return True
    scheduled = sum(w.scheduled for w in p.obs.current)
    waiting = f"attempt {attempt}: waiting for {nodes - scheduled} worker(s) to be scheduled"
    if problems:
        p.phase("Pending", "WorkerProblem", "; ".join(problems)[:1024], warning=True)
    elif scheduled == nodes:
        p.phase(
            "Initializing",
            "Initializing",
            f"attempt {attempt}: {counts['running']}/{nodes} workers running",
        )
    elif p.spec.resources.gang is not None and not p.obs.missing:
        says = next((w.unschedulable for w in p.obs.current if w.unschedulable), None)
        msg = gang.waiting_message(p.spec.resources.gang.scheduler, nodes, scheduled, says)
        p.phase("Pending", "WaitingForGang", f"attempt {attempt}: {msg}")
    elif attempt > 1 and p.old_phase == "Restarting":
        p.phase("Restarting", "Restarting", waiting)
    else:
        p.phase("Pending", "Pending", waiting)
    p.cond("Running", False, "WaitingForWorkers", f"{counts['running']}/{nodes} workers running")
    return True
