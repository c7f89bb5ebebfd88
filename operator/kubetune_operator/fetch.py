"""Reads from the API server: the job, its pods, an upstream job, its Kueue Workload and
what that needs (priority classes, resource flavors, which APIs are served). Plain dicts,
camelCase."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable, Mapping
from typing import Any

from kubernetes import client

from kubetune_operator import metrics
from kubetune_operator.api import constants as c
from kubetune_operator.decode import bounded_copy
from kubetune_operator.reconcile import workload as wl
from kubetune_operator.responses import as_json

PodIndex = Mapping[tuple[str, str], Iterable[dict[str, Any]]]
JobIndex = Mapping[tuple[str, str], Iterable[dict[str, Any]]]
WorkloadIndex = Mapping[tuple[str, str], Iterable[dict[str, Any]]]
# How long an answer on whether the cluster serves an API is trusted.
API_CHECK_SECONDS = 60.0


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
        workload_index: WorkloadIndex | None = None,
    ) -> None:
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.pod_index = pod_index
        self.job_index = job_index
        self.workload_index = workload_index
        # (namespace, name) -> (versions the index may still show, a body newer than those)
        self.newer: dict[tuple[str, str], tuple[frozenset[str | None], dict[str, Any]]] = {}
        self.stale: set[tuple[str, str]] = set()
        # Workloads this operator wrote, by (namespace, job), until the watch shows them.
        self.newer_workloads: dict[
            tuple[str, str], tuple[frozenset[str | None], dict[str, Any]]
        ] = {}
        self.stale_workloads: set[tuple[str, str]] = set()
        # "group/version" -> (served, when checked)
        self.apis: dict[str, tuple[bool, float]] = {}

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

    # -- Kueue and gang schedulers ---------------------------------------------------------

    def workload(self, namespace: str, job: str, name: str) -> dict[str, Any] | None:
        """The job's Workload `name`, or None when there is none."""
        key = (namespace, job)
        if key in self.stale_workloads:
            self.stale_workloads.discard(key)
            self.newer_workloads.pop(key, None)
            return self._get_optional(wl.GROUP, wl.VERSION, wl.PLURAL, name, namespace)
        if self.workload_index is not None:
            indexed = [w for w in list(self.workload_index.get(key, ())) if _named(w, name)]
            if indexed:
                body = choose_newer(indexed[0], self.newer_workloads.get(key))
                if body is indexed[0]:
                    self.newer_workloads.pop(key, None)
                return copy.deepcopy(body)
        if key in self.newer_workloads:
            return copy.deepcopy(self.newer_workloads[key][1])
        return self._get_optional(wl.GROUP, wl.VERSION, wl.PLURAL, name, namespace)

    def remember_workload(self, job: str, body: dict[str, Any], replaces: str | None) -> None:
        """`body` (written by this operator) is newer than version `replaces` of the job's
        Workload, which the index may still show a while."""
        key = (body["metadata"]["namespace"], job)
        older = self.newer_workloads[key][0] if key in self.newer_workloads else frozenset()
        self.newer_workloads[key] = (older | {replaces}, workload_entry(body))

    def invalidate_workload(self, namespace: str, job: str) -> None:
        """The job's Workload changed under us (409): read it from the API server next time."""
        self.stale_workloads.add((namespace, job))

    def serves(self, group: str, version: str) -> bool:
        """True when the cluster serves API group/version (checked at most once a minute)."""
        key = f"{group}/{version}"
        known = self.apis.get(key)
        if known is not None and time.monotonic() - known[1] < API_CHECK_SECONDS:
            return known[0]
        try:
            with metrics.api_call("get"):
                self.custom.get_api_resources(group, version)
            served = True
        except client.ApiException as err:
            if err.status != 404:
                raise
            served = False
        self.apis[key] = (served, time.monotonic())
        return served

    def priority_value(self, group: str, name: str) -> int | None:
        """The value of PriorityClass (group scheduling.k8s.io) or WorkloadPriorityClass
        (group kueue.x-k8s.io) `name`; None when it does not exist."""
        if group == wl.GROUP:
            body = self._get_optional(wl.GROUP, wl.VERSION, "workloadpriorityclasses", name)
        else:
            body = self._get_optional("scheduling.k8s.io", "v1", "priorityclasses", name)
        return None if body is None else int(body.get("value") or 0)

    def flavors(self, names: Iterable[str]) -> list[dict[str, Any]]:
        """The ResourceFlavors `names` (ones that are gone are left out)."""
        found = [self._get_optional(wl.GROUP, wl.VERSION, "resourceflavors", n) for n in names]
        return [f for f in found if f is not None]

    def job_named_by_uid(self, namespace: str, uid: str) -> str | None:
        """The name of the FineTuneJob with `uid` in `namespace`, if the job index knows it."""
        if self.job_index is None:
            return None
        for (ns, name), bodies in list(self.job_index.items()):
            if ns == namespace and any(b["metadata"].get("uid") == uid for b in list(bodies)):
                return name
        return None

    def _get_optional(
        self, group: str, version: str, plural: str, name: str, namespace: str | None = None
    ) -> dict[str, Any] | None:
        """GET a custom or cluster object; None on 404."""
        try:
            with metrics.api_call("get"):
                if namespace is None:
                    resp = self.custom.get_cluster_custom_object(
                        group, version, plural, name, _preload_content=False
                    )
                else:
                    resp = self.custom.get_namespaced_custom_object(
                        group, version, namespace, plural, name, _preload_content=False
                    )
        except client.ApiException as err:
            if err.status == 404:
                return None
            raise
        return dict(as_json(resp))


def _named(body: Mapping[str, Any], name: str) -> bool:
    return bool((body.get("metadata") or {}).get("name") == name)


def workload_entry(body: Mapping[str, Any]) -> dict[str, Any]:
    """What the workload index keeps of a Workload: metadata without managedFields, the spec
    without its pod sets, and the status (Kueue's verdict), a private copy."""
    meta = {k: v for k, v in body.get("metadata", {}).items() if k != "managedFields"}
    spec = {k: v for k, v in (body.get("spec") or {}).items() if k != "podSets"}
    return copy.deepcopy({"metadata": meta, "spec": spec, "status": body.get("status") or {}})


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
