"""What a sweep or schedule pass reads: the parent itself, its jobs and its data-watch pods.

Straight from the API server (GET and a labelled LIST, both consistent reads): sweeps and
schedules are few, and a pass that decides how many trials run must not see a listing from
before its own last create.
"""

from __future__ import annotations

from typing import Any

from kubernetes import client

from kubetune_operator import metrics
from kubetune_operator.api import constants as c
from kubetune_operator.apply import as_json


def owned_by(obj: dict[str, Any], uid: str | None) -> bool:
    """True when `obj` has an owner reference to `uid` (a namesake parent's jobs are not ours)."""
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return uid is not None and any(ref.get("uid") == uid for ref in refs)


class ParentReader:
    """Reads sweeps and schedules, the FineTuneJobs they own, and the pods they own."""

    def __init__(self, api: client.ApiClient) -> None:
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    def parent(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The sweep or schedule, or None when it is gone."""
        try:
            with metrics.api_call("get"):
                resp = self.custom.get_namespaced_custom_object(
                    c.GROUP, c.VERSION, namespace, plural, name, _preload_content=False
                )
        except client.ApiException as err:
            if err.status == 404:
                return None
            raise
        return dict(as_json(resp))

    def jobs(self, namespace: str, label: str, parent: str, uid: str | None) -> dict[str, Any]:
        """The FineTuneJobs labelled `label=parent` that the parent owns, by name."""
        with metrics.api_call("list"):
            resp = self.custom.list_namespaced_custom_object(
                c.GROUP, c.VERSION, namespace, c.PLURAL,
                label_selector=f"{label}={parent}", _preload_content=False,
            )  # fmt: skip
        items = as_json(resp).get("items", [])
        return {j["metadata"]["name"]: j for j in items if owned_by(j, uid)}

    def pods(self, namespace: str, label: str, parent: str, uid: str | None) -> list[Any]:
        """The pods labelled `label=parent` that the parent owns."""
        with metrics.api_call("list"):
            resp = self.core.list_namespaced_pod(
                namespace, label_selector=f"{label}={parent}", _preload_content=False
            )
        return [p for p in as_json(resp).get("items", []) if owned_by(p, uid)]
