"""Reads from the API server: the job, its pods, an upstream job. Plain dicts, camelCase."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from kubernetes import client

from kubetune_operator import metrics
from kubetune_operator.api import constants as c
from kubetune_operator.decode import bounded_copy
from kubetune_operator.responses import as_json

PodIndex = Mapping[tuple[str, str], Iterable[dict[str, Any]]]
JobIndex = Mapping[tuple[str, str], Iterable[dict[str, Any]]]


class Reader:
    """Reads the objects a reconcile pass needs, as the API server spells them.

    With `pod_index` (worker pods by (namespace, job), kept up to date from the pod watch),
    `pods` reads from it instead of sending a LIST to the API server on every pass. With
    `job_index` (jobs by (namespace, name), from the job watch), `job` reads from it instead of
    a GET per pass. The watch may lag behind this operator's own status writes by a few
    milliseconds: `remember` keeps the newer body until the index has moved past the version
    it replaced, and `invalidate` (after a 409) makes the next read a GET.
    """

    def __init__(
        self,
        api: client.ApiClient,
        pod_index: PodIndex | None = None,
        job_index: JobIndex | None = None,
    ) -> None:
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.pod_index = pod_index
        self.job_index = job_index
        # (namespace, name) -> (versions the index may still show, a body newer than those)
        self.newer: dict[tuple[str, str], tuple[frozenset[str | None], dict[str, Any]]] = {}
        self.stale: set[tuple[str, str]] = set()

    def job(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The FineTuneJob, or None when it is gone."""
        key = (namespace, name)
        if self.job_index is None or key in self.stale:
            return self._get_job(namespace, name)
        indexed = _first(self.job_index.get(key, ()))
        if indexed is None:
            self.newer.pop(key, None)
            return None
        body = choose_newer(indexed, self.newer.get(key))
        if body is indexed:
            self.newer.pop(key, None)
        return bounded_copy(body)

    def remember(self, body: dict[str, Any], replaces: str | None) -> None:
        """`body` is newer than version `replaces`, which the index may still hold a while.

        Several writes may land before the watch shows the first: each replaced version stays
        known as older until the index moves past all of them.
        """
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        older = self.newer[key][0] if key in self.newer else frozenset()
        self.newer[key] = (older | {replaces}, job_entry(body))

    def invalidate(self, namespace: str, name: str) -> None:
        """The job changed under us (409): read it from the API server next time."""
        self.stale.add((namespace, name))

    def _get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        key = (namespace, name)
        try:
            with metrics.api_call("get"):
                resp = self.custom.get_namespaced_custom_object(
                    c.GROUP, c.VERSION, namespace, c.PLURAL, name, _preload_content=False
                )
        except client.ApiException as err:
            if err.status == 404:
                self.stale.discard(key)
                self.newer.pop(key, None)
                return None
            raise
        body = job_entry(as_json(resp))
        self.stale.discard(key)
        if self.job_index is not None:
            indexed = _first(self.job_index.get(key, ()))
            self.remember(body, _version(indexed))
        return body

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


def choose_newer(
    indexed: dict[str, Any], newer: tuple[frozenset[str | None], dict[str, Any]] | None
) -> dict[str, Any]:
    """The indexed body, unless the index still shows a version a newer known body replaced.

    Versions are compared for equality only (the API server's resourceVersions are opaque):
    once the index shows none of the replaced versions, the watch has caught up with (or gone
    past) what this operator wrote or read, and the index is the truth.
    """
    if newer is not None and _version(indexed) in newer[0]:
        return newer[1]
    return indexed


def job_entry(body: Mapping[str, Any]) -> dict[str, Any]:
    """What the job index keeps of a FineTuneJob: everything but managedFields, a private copy
    whose depth is bounded (decode.bounded_copy), so no job nests deeper than a pass can take."""
    meta = {k: v for k, v in body.get("metadata", {}).items() if k != "managedFields"}
    return dict(
        bounded_copy({**{k: v for k, v in body.items() if k != "metadata"}, "metadata": meta})
    )


def _first(values: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    return next(iter(list(values)), None)


def _version(body: Mapping[str, Any] | None) -> str | None:
    return ((body or {}).get("metadata") or {}).get("resourceVersion")


def index_entry(pod: Mapping[str, Any]) -> dict[str, Any]:
    """What the pod index keeps of a pod: all that observing a worker reads (metadata without
    managedFields, status, two spec fields), a private copy. A few hundred bytes instead of
    the whole pod keeps the operator small with ten thousand pods."""
    meta = {k: bounded_copy(v) for k, v in pod.get("metadata", {}).items() if k != "managedFields"}
    spec = pod.get("spec") or {}
    return {
        "metadata": meta,
        "spec": {k: spec[k] for k in ("nodeName", "terminationGracePeriodSeconds") if k in spec},
        "status": bounded_copy(dict(pod.get("status") or {})),
    }


def _owned_by(obj: dict[str, Any], uid: str) -> bool:
    """True when `obj` has an owner reference to `uid` (a re-created namesake's pods are not ours)."""
    return any(
        ref.get("uid") == uid for ref in obj.get("metadata", {}).get("ownerReferences") or []
    )
