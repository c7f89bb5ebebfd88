"""A finished job: Succeeded or Failed, its workers cleaned up (cleanPodPolicy), then its TTL.

`finish` is how every policy that ends the job ends it; `step` keeps a job that finished in an
earlier pass finished: its leftover workers go and the TTL runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kubetune_operator.api.status import TERMINAL_PHASES
from kubetune_operator.reconcile import workload
from kubetune_operator.reconcile.policies import cleanup, ttl

if TYPE_CHECKING:
    from kubetune_operator.reconcile.decision import Pass


def finish(p: Pass, phase: str, reason: str, message: str) -> bool:
    """End the job as `phase` (Succeeded or Failed): conditions, completion time, clean-up of
    the workers, TTL. Returns True: the pass ends here."""
    p.phase(phase, reason, message, warning=phase == "Failed")
    p.st.setdefault("completionTime", p.now_s)
    p.cond(phase, True, reason, message)
    p.cond("Running", False, reason, message)
    p.cond("Restarting", False, reason, message)
    _clean_up(p, failed=phase == "Failed")
    _release_quota(p, phase == "Succeeded", message)
    ttl.schedule(p)
    return True


def step(p: Pass) -> bool:
    """A job that already finished stays so; its workers are cleaned up and its TTL runs."""
    if p.old_phase not in TERMINAL_PHASES:
        return False
    _clean_up(p, failed=p.old_phase == "Failed")
    p.st["workers"] = p.obs.counts
    _release_quota(p, p.old_phase == "Succeeded", str(p.st.get("message") or p.old_phase))
    ttl.schedule(p)
    return True


def _clean_up(p: Pass, failed: bool) -> None:
    """Delete the workers cleanPodPolicy says go (a Failed job also stops unfinished ones)."""
    p.d.delete_pods = cleanup.pods_to_delete(
        p.run_policy.clean_pod_policy, (*p.obs.current, *p.obs.others), stop_unfinished=failed
    )


def _release_quota(p: Pass, succeeded: bool, message: str) -> None:
    """A finished job's Kueue Workload is marked Finished, so Kueue releases its quota."""
    q = p.queue
    if q is not None and q.body is not None and q.verdict and not q.verdict.finished:
        p.d.workload_status = workload.finished(q.body, succeeded, message, p.now_s)
