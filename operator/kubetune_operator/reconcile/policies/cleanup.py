"""cleanPodPolicy: which worker pods go when the job finishes."""

from __future__ import annotations

from collections.abc import Iterable

from kubetune_operator.reconcile.observe import Worker

FINISHED = ("Succeeded", "Failed")


def pods_to_delete(policy: str, workers: Iterable[Worker], stop_unfinished: bool) -> list[str]:
    """Pods to delete now that the job finished.

    All: every pod; Running: the ones still running; None: keep them for debugging. A Failed
    job also stops its unfinished workers whatever the policy (`stop_unfinished`): a broken gang
    cannot make progress and would hold its accelerators forever.
    """
    out = []
    for w in workers:
        if w.terminating:
            continue
        unfinished = w.phase not in FINISHED
        if policy == "All" or (unfinished and (policy == "Running" or stop_unfinished)):
            out.append(w.name)
    return out
