"""A thin JSON view of the API server for the node agent: objects are plain dicts (as the
API returns them), every call goes through one kubeconfig given explicitly."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import kubernetes
import yaml
from kubernetes.client.rest import ApiException
from kubernetes.watch.watch import iter_resp_lines

Obj = dict[str, Any]
MERGE_PATCH = "application/merge-patch+json"


class Kube:
    """API access for the agent: typed clients plus helpers that return dicts."""

    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig
        self.api_client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
        self.core = kubernetes.client.CoreV1Api(self.api_client)
        self.coordination = kubernetes.client.CoordinationV1Api(self.api_client)
        self.server = str(self.api_client.configuration.host)

    @property
    def server_port(self) -> int:
        """The apiserver's port (pods get it as KUBERNETES_SERVICE_PORT)."""
        return int(urlparse(self.server).port or 443)

    def ca_cert_pem(self) -> bytes:
        """The cluster CA from the kubeconfig (pods get it as ca.crt)."""
        config = yaml.safe_load(self.kubeconfig.read_text())
        cluster = config["clusters"][0]["cluster"]
        if "certificate-authority-data" in cluster:
            return base64.b64decode(cluster["certificate-authority-data"])
        return Path(cluster["certificate-authority"]).read_bytes()

    def call(self, method: Any, *args: Any, **kwargs: Any) -> Obj | None:
        """Call a typed-client method, returning the raw JSON as a dict; None on 404."""
        try:
            resp = method(*args, _preload_content=False, **kwargs)
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        data = resp.data
        return json.loads(data) if data else {}

    def configmap_data(self, namespace: str, name: str) -> dict[str, str] | None:
        """A ConfigMap's data (binaryData base64-decoded as text); None if it does not exist."""
        cm = self.call(self.core.read_namespaced_config_map, name, namespace)
        if cm is None:
            return None
        data = dict(cm.get("data") or {})
        for k, v in (cm.get("binaryData") or {}).items():
            data[k] = base64.b64decode(v).decode(errors="replace")
        return data

    def secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        """A Secret's data decoded to text; None if it does not exist."""
        secret = self.call(self.core.read_namespaced_secret, name, namespace)
        if secret is None:
            return None
        return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}

    def claim_path(self, namespace: str, claim: str) -> Path | None:
        """The host folder behind a PersistentVolumeClaim: the hostPath or local path of the
        PersistentVolume it is bound to (None for any other volume type). LookupError while
        the claim is missing or not bound yet (the kubelet waits for it too)."""
        pvc = self.call(self.core.read_namespaced_persistent_volume_claim, claim, namespace)
        if pvc is None:
            raise LookupError(f"PersistentVolumeClaim {namespace}/{claim} not found")
        volume = (pvc.get("spec") or {}).get("volumeName")
        if not volume or (pvc.get("status") or {}).get("phase") != "Bound":
            raise LookupError(f"PersistentVolumeClaim {namespace}/{claim} is not bound")
        pv = self.call(self.core.read_persistent_volume, volume)
        if pv is None:
            raise LookupError(f"PersistentVolume {volume} of claim {namespace}/{claim} not found")
        source = pv["spec"].get("hostPath") or pv["spec"].get("local")
        return Path(source["path"]) if source else None

    def service_account_token(
        self, namespace: str, account: str, pod: Obj, audiences: list[str], seconds: int
    ) -> str:
        """A token for the pod's ServiceAccount from the TokenRequest API, bound to the pod
        (invalid once the pod is gone), as the kubelet requests it."""
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": audiences,
                "expirationSeconds": seconds,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": pod["metadata"]["name"],
                    "uid": pod["metadata"]["uid"],
                },
            },
        }
        out = self.call(self.core.create_namespaced_service_account_token, account, namespace, body)
        if out is None:
            raise LookupError(f"ServiceAccount {namespace}/{account} not found")
        return str(out["status"]["token"])

    def patch_pod_status(self, namespace: str, name: str, status: Obj) -> None:
        """Merge-patch a pod's status subresource (a pod already gone is ignored)."""
        self.call(
            self.core.patch_namespaced_pod_status,
            name,
            namespace,
            {"status": status},
            _content_type=MERGE_PATCH,
        )

    def remove_pod(self, namespace: str, name: str, uid: str) -> None:
        """Delete the pod now (grace 0) if it is still the same object (uid precondition)."""
        body = {"gracePeriodSeconds": 0, "preconditions": {"uid": uid}}
        try:
            self.call(self.core.delete_namespaced_pod, name, namespace, body=body)
        except ApiException as err:
            if err.status != 409:  # a newer pod took the name: not ours to delete
                raise

    def watch_lines(
        self, list_method: Any, resource_version: str, holder: list[Any]
    ) -> Iterator[Obj]:
        """Watch events of a cluster-wide list method from `resource_version`; the open
        response is put in `holder` so another thread can shut it down."""
        resp = list_method(
            watch=True,
            resource_version=resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=300,
            _preload_content=False,
        )
        holder.append(resp)
        try:
            for line in iter_resp_lines(resp):
                yield json.loads(line)
        finally:
            resp.release_conn()
