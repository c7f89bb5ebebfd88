"""Reads from the API server: the job, its pods, an upstream job. Plain dicts, camelCase."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from kubernetes import client

from kubetune_operator import metrics
from kubetune_operator.api import constants as c
from kubetune_operator.apply import as_json

PodIndex = Mapping[tuple[str, str], Iterable[dict[str, Any]]]


class Reader:
    """Reads the objects a reconcile pass needs, as the API server spells them.

    With `pod_index` (worker pods by (namespace, job), kept up to date from the pod watch),
    `pods` reads from it instead of sending a LIST to the API server on every pass.
    """

    def __init__(self, api: client.ApiClient, pod_index: PodIndex | None = None) -> None:
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.pod_index = pod_index

    def job(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The FineTuneJob, or None when it is gone."""
        try:
            with metrics.api_call("get"):
                resp = self.custom.get_namespaced_custom_object(
                    c.GROUP, c.VERSION, namespace, c.PLURAL, name, _preload_content=False
                )
        except client.ApiException as err:
            if err.status == 404:
                return None
            raise
        return dict(as_json(resp))

    def pods(self, namespace: str, job: str, uid: str | None) -> list[dict[str, Any]]:
        """Worker pods of the job (all attempts) that the job owns."""
        if self.pod_index is not None:
            # list() of the index's values is one step under the GIL: safe from this thread
            # while the event loop updates the index.
            cached = list(self.pod_index.get((namespace, job), ()))
            return [p for p in cached if uid is None or _owned_by(p, uid)]
        with metrics.api_call("list"):
            resp = self.core.list_namespaced_pod(
                namespace,
                label_selector=f"{c.LABEL_JOB}={job},{c.LABEL_ROLE}=worker",
                _preload_content=False,
            )
        items = as_json(resp).get("items", [])
        return [p for p in items if uid is None or _owned_by(p, uid)]


def index_entry(pod: Mapping[str, Any]) -> dict[str, Any]:
    """What the pod index keeps of a pod: all that observing a worker reads (metadata without
    managedFields, status, two spec fields), a private copy. A few hundred bytes instead of
    the whole pod keeps the operator small with ten thousand pods."""
    meta = {k: copy.deepcopy(v) for k, v in pod.get("metadata", {}).items() if k != "managedFields"}
    spec = pod.get("spec") or {}
    return {
        "metadata": meta,
        "spec": {k: spec[k] for k in ("nodeName", "terminationGracePeriodSeconds") if k in spec},
        "status": copy.deepcopy(dict(pod.get("status") or {})),
    }


def _owned_by(obj: dict[str, Any], uid: str) -> bool:
    """True when `obj` has an owner reference to `uid` (a re-created namesake's pods are not ours)."""
    return any(
        ref.get("uid") == uid for ref in obj.get("metadata", {}).get("ownerReferences") or []
    )
