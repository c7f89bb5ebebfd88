"""Kubernetes events on the FineTuneJob, posted by rank 0 with the per-job ServiceAccount.

What `kubectl describe ftj` then shows besides the operator's events: the model download, each
committed checkpoint, each evaluation and the export. Routine events (checkpoints, evaluations)
draw from a token bucket, so a job that evaluates every few seconds cannot flood the API
server; the next one posted says how many were left out. Events are a courtesy: a failed post
is logged and training goes on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

log = logging.getLogger("kubetune_trainer")

COMPONENT = "kubetune-trainer"
API_VERSION, KIND = "kubetune.dev/v1alpha1", "FineTuneJob"


class EventSink(Protocol):
    """Where rank 0's events go."""

    def post(self, reason: str, message: str, warning: bool = False, routine: bool = False) -> None:
        """Post one event; routine ones may be left out when they come too fast."""
        ...


class TokenBucket:
    """At most `burst` at once, refilled at `per_second`: the sustained rate stays bounded."""

    def __init__(
        self, burst: float, per_second: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.burst, self.rate, self.clock = burst, per_second, clock
        self.tokens, self.last = burst, clock()

    def take(self) -> bool:
        """Whether one more may go now (and spend a token if so)."""
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


def event_body(
    name: str,
    namespace: str,
    uid: str | None,
    reason: str,
    message: str,
    warning: bool,
    now: datetime,
) -> dict[str, Any]:
    """A core/v1 Event about the job, as the trainer reports it."""
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{name}.", "namespace": namespace},
        "involvedObject": {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": name,
            "namespace": namespace,
            "uid": uid,
        },
        "type": "Warning" if warning else "Normal",
        "reason": reason,
        "message": message[:1024],
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": f"{COMPONENT}-{name}",
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


class KubernetesEvents:
    """Events through the API server (in-cluster config unless an ApiClient is given)."""

    def __init__(
        self,
        name: str,
        namespace: str,
        uid: str | None,
        api_client: Any = None,
        bucket: TokenBucket | None = None,
    ) -> None:
        self.name, self.namespace, self.uid = name, namespace, uid
        self.bucket = bucket or TokenBucket(burst=10, per_second=0.1)
        self.left_out = 0
        self.lock = threading.Lock()  # commits are noticed on the training thread, but be safe
        if api_client is None:
            from kubernetes import config

            config.load_incluster_config()
        from kubernetes import client

        self.core = client.CoreV1Api(api_client)

    def post(self, reason: str, message: str, warning: bool = False, routine: bool = False) -> None:
        with self.lock:
            if routine and not self.bucket.take():
                self.left_out += 1
                return
            if self.left_out:
                message += f" ({self.left_out} earlier event(s) not posted: too frequent)"
                self.left_out = 0
        body = event_body(
            self.name, self.namespace, self.uid, reason, message, warning, datetime.now(UTC)
        )
        try:
            self.core.create_namespaced_event(self.namespace, body)  # type: ignore[arg-type]
        except Exception as e:  # an event is a courtesy: never end training for one
            log.warning("could not post event %s: %s", reason, e)


class LogEvents:
    """Events of a run without a cluster: lines in rank 0's log."""

    def post(self, reason: str, message: str, warning: bool = False, routine: bool = False) -> None:
        (log.warning if warning else log.info)("event %s: %s", reason, message)
