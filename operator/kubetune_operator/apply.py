"""The only module that writes to the API server.

Children have deterministic names and are created; a supporting child that exists already (a
later attempt, an upgraded operator) is then server-side applied under one field manager, so
re-applying is idempotent and another actor's fields are never clobbered silently. An object of
that name the job does not own (no controller reference to the job's uid) is never applied,
adopted or deleted: ForeignObject says which it is. Pods are never updated (a new attempt has
new pod names). Status is written with a
merge patch carrying the resourceVersion the decision was made on: a concurrent writer (a
second replica, a stale event) gets 409 Conflict and the decision is made again on fresh data.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from kubernetes import client

from kubetune_operator import metrics
from kubetune_operator.api import constants as c
from kubetune_operator.reconcile import workload as wl
from kubetune_operator.reconcile.decision import Event
from kubetune_operator.responses import as_json, done

APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
# Children that are custom resources: kind -> plural (the group and version are in apiVersion).
CUSTOM_PLURALS = {"PodGroup": "podgroups", "Workload": "workloads"}


def group_version(obj: dict[str, Any]) -> tuple[str, str]:
    """(group, version) of an object's apiVersion."""
    group, _, version = obj["apiVersion"].rpartition("/")
    return group, version


class ForeignObject(Exception):
    """A child's name is taken by an object this job does not own; the message says which."""

    def __init__(self, obj: dict[str, Any]) -> None:
        kind, name = obj["kind"], obj["metadata"]["name"]
        super().__init__(
            f"{kind} {name} exists and does not belong to this job: the operator does not take "
            f"it over; delete or rename that {kind}, or give the job another name"
        )


def owner_uid(obj: dict[str, Any]) -> str | None:
    """The uid of the controller owner reference of a (rendered or read) object."""
    refs = obj.get("metadata", {}).get("ownerReferences") or []
    return next((r.get("uid") for r in refs if r.get("controller")), None)


class Writer:
    """Writes on behalf of the operator, counting API errors by verb."""

    def __init__(self, api: client.ApiClient) -> None:
        self.core = client.CoreV1Api(api)
        self.rbac = client.RbacAuthorizationV1Api(api)
        self.networking = client.NetworkingV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    def apply(self, obj: dict[str, Any]) -> None:
        """Server-side apply one supporting child (ServiceAccount, Role, RoleBinding, ConfigMap,
        Service, NetworkPolicy) that exists already; pods are only ever created."""
        kind, meta = obj["kind"], obj["metadata"]
        if kind in CUSTOM_PLURALS:
            with metrics.api_call("apply"):
                done(self.custom.patch_namespaced_custom_object(
                    *group_version(obj), meta["namespace"], CUSTOM_PLURALS[kind], meta["name"],
                    obj, field_manager=c.FIELD_MANAGER, force=True, _content_type=APPLY,
                    _preload_content=False,
                ))  # fmt: skip
            return
        patchers = {
            "ServiceAccount": self.core.patch_namespaced_service_account,
            "ConfigMap": self.core.patch_namespaced_config_map,
            "Service": self.core.patch_namespaced_service,
            "Role": self.rbac.patch_namespaced_role,
            "RoleBinding": self.rbac.patch_namespaced_role_binding,
            "NetworkPolicy": self.networking.patch_namespaced_network_policy,
        }
        with metrics.api_call("apply"):
            done(
                patchers[kind](
                    meta["name"],
                    meta["namespace"],
                    obj,
                    field_manager=c.FIELD_MANAGER,
                    force=True,
                    _content_type=APPLY,
                    _preload_content=False,
                )
            )

    def create(self, obj: dict[str, Any]) -> bool:
        """Create a rendered child; False when one of that name exists already.

        A create costs the API server about half an apply (no managed-fields merge), and
        children have deterministic names, so "exists" means an earlier pass made it.
        """
        kind, meta = obj["kind"], obj["metadata"]
        if kind in CUSTOM_PLURALS:
            return self._create_custom(obj)
        creators = {
            "ServiceAccount": self.core.create_namespaced_service_account,
            "ConfigMap": self.core.create_namespaced_config_map,
            "Service": self.core.create_namespaced_service,
            "Pod": self.core.create_namespaced_pod,
            "Role": self.rbac.create_namespaced_role,
            "RoleBinding": self.rbac.create_namespaced_role_binding,
            "NetworkPolicy": self.networking.create_namespaced_network_policy,
        }
        with metrics.api_call("create"):
            try:
                done(
                    creators[kind](  # type: ignore[operator]
                        meta["namespace"],
                        obj,
                        field_manager=c.FIELD_MANAGER,
                        _preload_content=False,
                    )
                )
            except client.ApiException as err:
                if err.status != 409:
                    raise
                return False
        return True

    def _create_custom(self, obj: dict[str, Any]) -> bool:
        """Create a custom-resource child (a PodGroup, a Workload); False when it exists."""
        meta = obj["metadata"]
        with metrics.api_call("create"):
            try:
                done(self.custom.create_namespaced_custom_object(
                    *group_version(obj), meta["namespace"], CUSTOM_PLURALS[obj["kind"]], obj,
                    field_manager=c.FIELD_MANAGER, _preload_content=False,
                ))  # fmt: skip
            except client.ApiException as err:
                if err.status != 409:
                    raise
                return False
        return True

    def patch_workload(
        self,
        namespace: str,
        name: str,
        resource_version: str | None,
        spec: dict[str, Any] | None = None,
        status: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Merge-patch a Kueue Workload's spec or status (refused with 409 if it changed since
        `resource_version` was read); returns the Workload as written."""
        meta: dict[str, Any] = {"resourceVersion": resource_version} if resource_version else {}
        patcher = self.custom.patch_namespaced_custom_object
        body: dict[str, Any] = {"metadata": meta, "spec": spec}
        if status is not None:
            patcher = self.custom.patch_namespaced_custom_object_status
            body = {"metadata": meta, "status": status}
        with metrics.api_call("patch_status" if status is not None else "patch"):
            resp: Any = patcher(
                wl.GROUP, wl.VERSION, namespace, wl.PLURAL, name, body,
                field_manager=c.FIELD_MANAGER, _content_type=MERGE, _preload_content=False,
            )  # fmt: skip
            try:
                return dict(as_json(resp))
            finally:
                resp.release_conn()

    def ensure(self, obj: dict[str, Any]) -> None:
        """Create a supporting child, or apply it when it exists and is the job's own (a later
        attempt, an upgraded operator), so it matches what this operator renders now."""
        if not self.create(obj):
            self.check_owned(obj)
            self.apply(obj)

    def check_owned(self, obj: dict[str, Any]) -> None:
        """Raise ForeignObject unless the existing object of `obj`'s name is controlled by the
        same job (uid) as `obj`; gone meanwhile is fine (the next pass creates it)."""
        kind, meta = obj["kind"], obj["metadata"]
        readers: dict[str, Any] = {
            "ServiceAccount": self.core.read_namespaced_service_account,
            "ConfigMap": self.core.read_namespaced_config_map,
            "Service": self.core.read_namespaced_service,
            "Pod": self.core.read_namespaced_pod,
            "Role": self.rbac.read_namespaced_role,
            "RoleBinding": self.rbac.read_namespaced_role_binding,
            "NetworkPolicy": self.networking.read_namespaced_network_policy,
        }
        if kind in CUSTOM_PLURALS:
            group, version = group_version(obj)

            def read_custom(name: str, namespace: str, **kw: Any) -> Any:
                return self.custom.get_namespaced_custom_object(
                    group, version, namespace, CUSTOM_PLURALS[kind], name, **kw
                )

            readers[kind] = read_custom
        try:
            with metrics.api_call("get"):
                resp = readers[kind](meta["name"], meta["namespace"], _preload_content=False)
                try:
                    existing = as_json(resp)
                finally:
                    resp.release_conn()
        except client.ApiException as err:
            if err.status == 404:
                return
            raise
        if owner_uid(existing) != owner_uid(obj):
            raise ForeignObject(obj)

    def ensure_key_secret(self, namespace: str, name: str, key: str) -> None:
        """Create Secret `name` holding a new random `key` unless one of that name exists: a
        key that signed checkpoints is never replaced."""
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {c.LABEL_MANAGED_BY: c.MANAGED_BY},
            },
            "type": "Opaque",
            "stringData": {key: secrets.token_hex(32)},
        }
        with metrics.api_call("create"):
            try:
                done(
                    self.core.create_namespaced_secret(
                        namespace,
                        body,  # type: ignore[arg-type]
                        field_manager=c.FIELD_MANAGER,
                        _preload_content=False,
                    )
                )
            except client.ApiException as err:
                if err.status != 409:
                    raise

    def delete_pod(self, namespace: str, name: str) -> None:
        """Delete a worker; its grace period lets the trainer checkpoint on SIGTERM. Gone is fine."""
        try:
            with metrics.api_call("delete"):
                done(self.core.delete_namespaced_pod(name, namespace, _preload_content=False))
        except client.ApiException as err:
            if err.status != 404:
                raise

    def patch_status(
        self,
        namespace: str,
        name: str,
        resource_version: str,
        patch: dict[str, Any],
        plural: str = c.PLURAL,
    ) -> dict[str, Any]:
        """Patch the status subresource of a job (or a sweep or schedule: `plural`), refused
        (409) if the object changed meanwhile. Returns the object as written (the next pass
        may see it before the watch does)."""
        body = {"metadata": {"resourceVersion": resource_version}, "status": patch}
        with metrics.api_call("patch_status"):
            resp: Any = self.custom.patch_namespaced_custom_object_status(
                c.GROUP, c.VERSION, namespace, plural, name, body,
                field_manager=c.FIELD_MANAGER, _content_type=MERGE, _preload_content=False,
            )  # fmt: skip
            try:
                return dict(as_json(resp))
            finally:
                resp.release_conn()

    def create_job(self, obj: dict[str, Any]) -> bool:
        """Create a FineTuneJob a sweep or schedule made; False when one of that name exists
        (names are deterministic: an earlier pass made it)."""
        meta = obj["metadata"]
        with metrics.api_call("create"):
            try:
                done(self.custom.create_namespaced_custom_object(
                    c.GROUP, c.VERSION, meta["namespace"], c.PLURAL, obj,
                    field_manager=c.FIELD_MANAGER, _preload_content=False,
                ))  # fmt: skip
            except client.ApiException as err:
                if err.status != 409:
                    raise
                return False
        return True

    def delete_job(self, namespace: str, name: str, uid: str | None) -> None:
        """Delete a job (TTL, a losing trial, a replaced run); the uid precondition spares a
        re-created namesake."""
        try:
            with metrics.api_call("delete"):
                done(self.custom.delete_namespaced_custom_object(
                    c.GROUP, c.VERSION, namespace, c.PLURAL, name,
                    body=client.V1DeleteOptions(
                        preconditions=client.V1Preconditions(uid=uid) if uid else None,
                        propagation_policy="Background",
                    ),
                    _preload_content=False,
                ))  # fmt: skip
        except client.ApiException as err:
            if err.status not in (404, 409):
                raise

    def post_event(self, job: dict[str, Any], event: Event) -> None:
        """A core/v1 Event on the job, sweep or schedule (what `kubectl describe` shows)."""
        meta = job["metadata"]
        now = datetime.now(UTC)
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": c.API_VERSION,
                "kind": job.get("kind", c.KIND),
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": event.type,
            "reason": event.reason,
            "message": event.message[:1024],
            "source": {"component": c.MANAGED_BY},
            "reportingComponent": c.MANAGED_BY,
            "reportingInstance": c.MANAGED_BY,
            "firstTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "lastTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "count": 1,
        }
        with metrics.api_call("event"):
            done(self.core.create_namespaced_event(meta["namespace"], body, _preload_content=False))  # type: ignore[arg-type]
