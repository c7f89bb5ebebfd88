"""Which pod events matter: a worker pod's event wakes its job only if the pass would see a change.

A pod changes many times in ways no status decision reads (kubelet condition timestamps,
annotations, the IP it got, managed fields). Each such event used to cost a reconcile pass:
parsing the job, observing every worker, comparing the status. Here every worker pod is reduced
to what observing it yields (`worker_from_pod`, the same reduction the pass makes), and only an
event that changes that reduction, or removes the pod, wakes the job.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubetune_operator.reconcile.observe import Worker, worker_from_pod


class WorkerChanges:
    """Remembers each worker pod (by uid) as the status decision last saw it.

    Only the event loop calls it, so it needs no lock.
    """

    def __init__(self) -> None:
        self.seen: dict[str, Worker] = {}

    def matters(self, event_type: str | None, uid: str, pod: Mapping[str, Any]) -> bool:
        """True when this event changes what a reconcile pass would observe of the pod."""
        if event_type == "DELETED":
            self.seen.pop(uid, None)
            return True
        worker = worker_from_pod(dict(pod))
        if self.seen.get(uid) == worker:
            return False
        self.seen[uid] = worker
        return True

    def __len__(self) -> int:
        return len(self.seen)
