"""startupErrorTimeout: a worker whose container cannot start is reported, and optionally failed.

An image that cannot be pulled, or a Secret or key the pod references that does not exist,
keeps a pod Pending with no end; the kubelet retries, so the problem may also be fixed while
it waits. After the timeout (counted from when the pod was scheduled, since nothing is pulled
before that, however long a queue held the pod) the job says why; with failOnStartupError the
attempt also ends as failed.
"""

from __future__ import annotations

from datetime import datetime

# The kubelet's waiting reasons -> status.lastFailure.reason.
STARTUP_ERRORS = {
    "ErrImagePull": "ImagePullError",
    "ImagePullBackOff": "ImagePullError",
    "InvalidImageName": "ImagePullError",
    "CreateContainerConfigError": "ContainerConfigError",
    "CreateContainerError": "ContainerConfigError",
}


def failure_class(waiting_reason: str | None) -> str | None:
    """The failure class of a container waiting for `waiting_reason`; None if it is no error."""
    return STARTUP_ERRORS.get(waiting_reason or "")


def seconds_until_error(since: datetime | None, timeout_seconds: float, now: datetime) -> float:
    """Seconds before a worker waiting since `since` counts as failing to start (<= 0: now)."""
    if since is None:
        return 0.0
    return timeout_seconds - (now - since).total_seconds()
