"""Gang schedulers: the PodGroup of a job's workers and the marks each worker carries for it.

One PodGroup per job (shared by its attempts), owned by the job, with minMember = the workers:
the scheduler binds all of them together or none. The scheduler-plugins Coscheduling plugin
finds a pod's group by the label scheduling.x-k8s.io/pod-group, Volcano by the annotation
scheduling.k8s.io/group-name.
"""

from __future__ import annotations

from typing import Any

from kubetune_operator.api import guards

COSCHEDULING = "coscheduling"
VOLCANO = "volcano"
# scheduler -> apiVersion of its PodGroup (the scheduler's API, not kubetune's)
API_VERSIONS = {
    COSCHEDULING: "scheduling.x-k8s.io/v1alpha1",
    VOLCANO: "scheduling.volcano.sh/v1beta1",
}
# scheduler -> (API group, version) of its PodGroup
APIS = {s: (v.split("/")[0], v.split("/")[1]) for s, v in API_VERSIONS.items()}
COSCHEDULING_LABEL = "scheduling.x-k8s.io/pod-group"
VOLCANO_ANNOTATION = "scheduling.k8s.io/group-name"


def api_version(scheduler: str) -> str:
    """apiVersion of the scheduler's PodGroup."""
    return API_VERSIONS[scheduler]


def times(quantity: Any, n: int) -> str:
    """A Kubernetes quantity multiplied by n, as a quantity string."""
    amount = guards.quantity(quantity)
    if amount is None:
        raise ValueError(f"not a Kubernetes quantity: {quantity!r}")
    total = amount * n
    if total == total.to_integral_value():
        return str(int(total))
    return f"{int((total * 1000).to_integral_value())}m"


def min_resources(requests: dict[str, Any], workers: int) -> dict[str, str]:
    """What the whole gang requests: one worker's requests times the workers."""
    return {name: times(value, workers) for name, value in sorted(requests.items())}


def pod_group(
    *,
    scheduler: str,
    name: str,
    metadata: dict[str, Any],
    workers: int,
    requests: dict[str, Any],
    timeout_seconds: int | None,
    volcano_queue: str | None,
    priority_class: str | None,
) -> dict[str, Any]:
    """The PodGroup of `workers` pods for `scheduler`, with `metadata` (name, namespace,
    labels and owner reference of the job's children)."""
    spec: dict[str, Any] = {"minMember": workers}
    if requests:
        spec["minResources"] = min_resources(requests, workers)
    if scheduler == COSCHEDULING and timeout_seconds is not None:
        spec["scheduleTimeoutSeconds"] = timeout_seconds
    if scheduler == VOLCANO:
        if volcano_queue:
            spec["queue"] = volcano_queue
        if priority_class:
            spec["priorityClassName"] = priority_class
    return {
        "apiVersion": api_version(scheduler),
        "kind": "PodGroup",
        "metadata": {**metadata, "name": name},
        "spec": spec,
    }


def worker_marks(scheduler: str, group: str) -> tuple[dict[str, str], dict[str, str]]:
    """(labels, annotations) that put a worker into PodGroup `group` of `scheduler`."""
    if scheduler == COSCHEDULING:
        return {COSCHEDULING_LABEL: group}, {}
    return {}, {VOLCANO_ANNOTATION: group}
