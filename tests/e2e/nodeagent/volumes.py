"""Volumes of a pod materialized as folders on the host (the pod's mount namespace then
bind-mounts them at their mount paths): ConfigMap, Secret, downwardAPI, projected (incl. the
ServiceAccount token), emptyDir, hostPath, and PersistentVolumeClaims bound to hostPath or
local PersistentVolumes."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tests.e2e.nodeagent import podspec
from tests.e2e.nodeagent.podspec import Pod, PodAddresses, PodConfigError

# (service account, audiences, expiration seconds) -> token
TokenSource = Callable[[str, list[str], int], str]
# (namespace, claim) -> host folder of its volume (None: a volume type the agent cannot mount)
ClaimSource = Callable[[str, str], Path | None]
DEFAULT_TOKEN_SECONDS = 3607


def _write_items(
    target: Path,
    data: Mapping[str, str],
    items: list[dict[str, Any]] | None,
    default_mode: int,
    where: str,
    optional: bool,
) -> None:
    """Write keys as files: all keys, or only `items` (key -> path, mode)."""
    chosen = items or [{"key": k, "path": k} for k in data]
    for item in chosen:
        if item["key"] not in data:
            if optional:
                continue
            raise PodConfigError(f"{where}: key {item['key']!r} not found")
        path = target / item["path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(data[item["key"]])
        path.chmod(item.get("mode", default_mode))


def _object_files(
    kind: str,
    src: Mapping[str, Any],
    ns: str,
    lookup: podspec.Lookup,
    target: Path,
    default_mode: int,
    where: str,
) -> None:
    """A ConfigMap or Secret (volume or projection) written into `target`."""
    name = src.get("name") or src.get("secretName", "")
    data = lookup(ns, name)
    optional = bool(src.get("optional", False))
    if data is None:
        if optional:
            return
        raise PodConfigError(f"{where}: {kind} {ns}/{name} not found")
    _write_items(
        target, data, src.get("items"), src.get("defaultMode", default_mode), where, optional
    )


def _downward_files(
    pod: Pod,
    items: list[dict[str, Any]],
    addrs: PodAddresses,
    target: Path,
    mode: int,
    node: Mapping[str, str],
) -> None:
    """downwardAPI items (fieldRef / resourceFieldRef) as files."""
    containers = {c["name"]: c for c in pod["spec"]["containers"]}
    for item in items:
        if "fieldRef" in item:
            value = podspec.field_value(pod, item["fieldRef"]["fieldPath"], addrs)
        else:
            ref = item["resourceFieldRef"]
            container = containers.get(ref.get("containerName", ""), pod["spec"]["containers"][0])
            value = podspec.resource_value(container, ref, node)
        path = target / item["path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value)
        path.chmod(item.get("mode", mode))


def materialize(
    pod: Pod,
    pod_dir: Path,
    memory_dir: Path,
    addrs: PodAddresses,
    configmaps: podspec.Lookup,
    secrets: podspec.Lookup,
    token: TokenSource,
    node_allocatable: Mapping[str, str],
    claims: ClaimSource | None = None,
) -> dict[str, Path]:
    """Create every volume of the pod; returns volume name -> host folder (or file)."""
    ns = pod["metadata"]["namespace"]
    out: dict[str, Path] = {}
    for vol in pod["spec"].get("volumes") or []:
        name, where = vol["name"], f"spec.volumes[{vol['name']}]"
        target = pod_dir / "volumes" / name
        if "emptyDir" in vol:
            medium = (vol["emptyDir"] or {}).get("medium", "")
            target = memory_dir / name if medium == "Memory" else target
            target.mkdir(parents=True, exist_ok=True)
        elif "persistentVolumeClaim" in vol and claims is not None:
            claim = vol["persistentVolumeClaim"]["claimName"]
            found = claims(ns, claim)
            if found is None:
                raise PodConfigError(f"{where}: the volume of claim {claim} is not a host folder")
            target = found
        elif "hostPath" in vol:
            target = Path(vol["hostPath"]["path"])
            if vol["hostPath"].get("type") == "DirectoryOrCreate":
                target.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                raise PodConfigError(f"{where}: hostPath {target} does not exist")
        else:
            target.mkdir(parents=True, exist_ok=True)
            if "configMap" in vol:
                _object_files("ConfigMap", vol["configMap"], ns, configmaps, target, 0o644, where)
            elif "secret" in vol:
                _object_files("Secret", vol["secret"], ns, secrets, target, 0o644, where)
            elif "downwardAPI" in vol:
                src = vol["downwardAPI"]
                _downward_files(
                    pod,
                    src.get("items") or [],
                    addrs,
                    target,
                    src.get("defaultMode", 0o644),
                    node_allocatable,
                )
            elif "projected" in vol:
                _projected(
                    pod,
                    vol["projected"],
                    addrs,
                    target,
                    configmaps,
                    secrets,
                    token,
                    node_allocatable,
                    where,
                )
            else:
                kinds = sorted(k for k in vol if k != "name")
                raise PodConfigError(
                    f"{where}: volume type {kinds} is not supported by the node agent"
                )
        out[name] = target
    return out


def _projected(
    pod: Pod,
    src: Mapping[str, Any],
    addrs: PodAddresses,
    target: Path,
    configmaps: podspec.Lookup,
    secrets: podspec.Lookup,
    token: TokenSource,
    node: Mapping[str, str],
    where: str,
) -> None:
    """A projected volume: several sources written into one folder."""
    ns = pod["metadata"]["namespace"]
    mode = src.get("defaultMode", 0o644)
    account = pod["spec"].get("serviceAccountName", "default")
    for i, source in enumerate(src.get("sources") or []):
        here = f"{where}.sources[{i}]"
        if "serviceAccountToken" in source:
            t = source["serviceAccountToken"]
            aud = [t["audience"]] if t.get("audience") else []
            path = target / t["path"]
            path.write_text(
                token(account, aud, int(t.get("expirationSeconds", DEFAULT_TOKEN_SECONDS)))
            )
            path.chmod(mode)
        elif "configMap" in source:
            _object_files("ConfigMap", source["configMap"], ns, configmaps, target, mode, here)
        elif "secret" in source:
            _object_files("Secret", source["secret"], ns, secrets, target, mode, here)
        elif "downwardAPI" in source:
            _downward_files(
                pod, source["downwardAPI"].get("items") or [], addrs, target, mode, node
            )
        else:
            raise PodConfigError(f"{here}: projection {sorted(source)} is not supported")


def service_account_folder(pod: Pod, pod_dir: Path, token: TokenSource, ca_pem: bytes) -> Path:
    """The in-cluster credentials folder (token, ca.crt, namespace) for pods that have no
    kube-api-access volume of their own (ServiceAccount admission off)."""
    target = pod_dir / "volumes" / "serviceaccount"
    target.mkdir(parents=True, exist_ok=True)
    account = pod["spec"].get("serviceAccountName", "default")
    (target / "token").write_text(token(account, [], DEFAULT_TOKEN_SECONDS))
    (target / "ca.crt").write_bytes(ca_pem)
    (target / "namespace").write_text(pod["metadata"]["namespace"])
    return target


def needs_service_account_folder(pod: Pod, container: Mapping[str, Any]) -> bool:
    """Automount applies unless disabled or the container already mounts that path."""
    if pod["spec"].get("automountServiceAccountToken") is False:
        return False
    return all(m["mountPath"] != podspec.SA_MOUNT_PATH for m in container.get("volumeMounts") or [])
