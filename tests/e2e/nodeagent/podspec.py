"""Pure translations of a Pod object (a dict as the API returns it) into what the node agent
needs to run it: the container environment, the mount list and the /etc/hosts text."""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes.utils import parse_quantity

Pod = dict[str, Any]
# (namespace, name) -> data, or None when the object does not exist.
Lookup = Callable[[str, str], dict[str, str] | None]

SA_MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
DEFAULT_TERMINATION_PATH = "/dev/termination-log"
CLUSTER_DOMAIN = "cluster.local"
_LABEL_REF = re.compile(r"metadata\.(labels|annotations)\['(.+)'\]")


class PodConfigError(Exception):
    """The pod references something that cannot be resolved (a missing ConfigMap key, an
    unsupported field); the message names the field, like the kubelet's
    CreateContainerConfigError."""


@dataclass(frozen=True)
class PodAddresses:
    """Where the pod and its node are reachable."""

    pod_ip: str
    host_ip: str


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes $(VAR) expansion: defined names are replaced, `$$` is a literal `$`,
    unknown references stay as written."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "$" and i + 1 < len(text):
            if text[i + 1] == "$":
                out.append("$")
                i += 2
                continue
            end = text.find(")", i + 2) if text[i + 1] == "(" else -1
            if end != -1:
                name = text[i + 2 : end]
                out.append(env.get(name, text[i : end + 1]))
                i = end + 1
                continue
        out.append(text[i])
        i += 1
    return "".join(out)


def field_value(pod: Pod, path: str, addrs: PodAddresses) -> str:
    """The value of a downward-API fieldRef path (env or downwardAPI volume)."""
    meta, spec = pod["metadata"], pod["spec"]
    simple = {
        "metadata.name": meta["name"],
        "metadata.namespace": meta["namespace"],
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
        "status.podIP": addrs.pod_ip,
        "status.podIPs": addrs.pod_ip,
        "status.hostIP": addrs.host_ip,
        "status.hostIPs": addrs.host_ip,
    }
    if path in simple:
        return simple[path]
    if path in ("metadata.labels", "metadata.annotations"):
        items = sorted((meta.get(path.split(".")[1]) or {}).items())
        return "\n".join(f'{k}="{v}"' for k, v in items)
    match = _LABEL_REF.fullmatch(path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    raise PodConfigError(f"fieldRef.fieldPath {path!r} is not supported")


def resource_value(
    container: Mapping[str, Any], ref: Mapping[str, Any], node: Mapping[str, str]
) -> str:
    """A resourceFieldRef value: the container's request/limit (a missing limit is the node's
    allocatable), divided by the divisor and rounded up, as the kubelet does."""
    kind, _, name = ref["resource"].partition(".")
    resources = container.get("resources") or {}
    raw = (resources.get(kind) or {}).get(name)
    if raw is None:
        raw = node.get(name, "0") if kind == "limits" else "0"
    value = parse_quantity(raw) / parse_quantity(ref.get("divisor", "1"))
    return str(math.ceil(value))


def _key_from(kind: str, ns: str, ref: Mapping[str, Any], lookup: Lookup, where: str) -> str | None:
    """One key of a ConfigMap/Secret; None if optional and absent, else PodConfigError."""
    data = lookup(ns, ref["name"])
    value = None if data is None else data.get(ref["key"])
    if value is None and not ref.get("optional", False):
        missing = f"{kind} {ns}/{ref['name']}" + ("" if data is None else f" key {ref['key']!r}")
        raise PodConfigError(f"{where}: {missing} not found")
    return value


def container_env(
    pod: Pod,
    container: Mapping[str, Any],
    addrs: PodAddresses,
    base: Mapping[str, str],
    configmaps: Lookup,
    secrets: Lookup,
    node_allocatable: Mapping[str, str],
) -> dict[str, str]:
    """The process environment of one container: `base` (image and service variables), then
    envFrom, then env in order with $(VAR) expansion, as the kubelet builds it."""
    ns = pod["metadata"]["namespace"]
    env = dict(base)
    for i, source in enumerate(container.get("envFrom") or []):
        where = f"{container['name']}.envFrom[{i}]"
        kind, ref, lookup = (
            ("ConfigMap", source.get("configMapRef"), configmaps)
            if source.get("configMapRef")
            else ("Secret", source.get("secretRef"), secrets)
        )
        if ref is None:
            raise PodConfigError(f"{where}: needs configMapRef or secretRef")
        data = lookup(ns, ref["name"])
        if data is None and not ref.get("optional", False):
            raise PodConfigError(f"{where}: {kind} {ns}/{ref['name']} not found")
        for k, v in (data or {}).items():
            env[source.get("prefix", "") + k] = v
    for i, var in enumerate(container.get("env") or []):
        where = f"{container['name']}.env[{i}] ({var['name']})"
        value: str | None
        if "value" in var or "valueFrom" not in var:
            value = expand(var.get("value", ""), env)
        else:
            src = var["valueFrom"]
            if "fieldRef" in src:
                value = field_value(pod, src["fieldRef"]["fieldPath"], addrs)
            elif "resourceFieldRef" in src:
                value = resource_value(container, src["resourceFieldRef"], node_allocatable)
            elif "secretKeyRef" in src:
                value = _key_from("Secret", ns, src["secretKeyRef"], secrets, where)
            elif "configMapKeyRef" in src:
                value = _key_from("ConfigMap", ns, src["configMapKeyRef"], configmaps, where)
            else:
                raise PodConfigError(f"{where}: unsupported valueFrom {sorted(src)}")
        if value is not None:
            env[var["name"]] = value
    return env


def container_argv(container: Mapping[str, Any], env: Mapping[str, str]) -> list[str]:
    """command + args with $(VAR) expansion (the image's entrypoint does not exist here)."""
    return [
        expand(a, env) for a in [*(container.get("command") or []), *(container.get("args") or [])]
    ]


def decode_secret(data: Mapping[str, str] | None) -> dict[str, str] | None:
    """Secret .data values are base64; return them as text."""
    if data is None:
        return None
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def pod_hostname(pod: Pod) -> str:
    """spec.hostname, else the pod name (what the kubelet sets)."""
    return str(pod["spec"].get("hostname") or pod["metadata"]["name"])


@dataclass(frozen=True)
class HostEntry:
    """A pod published by a headless Service: its address and DNS names."""

    ip: str
    namespace: str
    hostname: str
    subdomain: str


def selects(selector: Mapping[str, str] | None, labels: Mapping[str, str] | None) -> bool:
    """Whether a Service's equality selector matches these labels (empty selects nothing)."""
    if not selector:
        return False
    return all((labels or {}).get(k) == v for k, v in selector.items())


def host_entries(pods: list[Pod], services: list[dict[str, Any]]) -> list[HostEntry]:
    """The DNS records a cluster DNS would publish for pods with hostname + subdomain: the
    subdomain must name a headless Service in the pod's namespace that selects the pod, and
    the pod must be running with a loopback address and not terminating."""
    headless = {
        (s["metadata"]["namespace"], s["metadata"]["name"]): s["spec"].get("selector")
        for s in services
        if s.get("spec", {}).get("clusterIP") == "None"
    }
    entries = []
    for pod in pods:
        meta, spec, status = pod["metadata"], pod["spec"], pod.get("status") or {}
        ip = status.get("podIP", "")
        key = (meta["namespace"], spec.get("subdomain", ""))
        if (
            spec.get("hostname")
            and key in headless
            and selects(headless[key], meta.get("labels"))
            and ip.startswith("127.")
            and status.get("phase") == "Running"
            and not meta.get("deletionTimestamp")
        ):
            entries.append(HostEntry(ip, meta["namespace"], spec["hostname"], key[1]))
    return sorted(entries, key=lambda e: (e.namespace, e.subdomain, e.hostname))


def _names(e: HostEntry, reader_namespace: str) -> list[str]:
    """Every name under which `e` resolves for a pod in `reader_namespace`."""
    base = f"{e.hostname}.{e.subdomain}.{e.namespace}"
    names = [f"{base}.svc.{CLUSTER_DOMAIN}", f"{base}.svc", base]
    if e.namespace == reader_namespace:
        names.append(f"{e.hostname}.{e.subdomain}")
    return names


def hosts_file(pod: Pod, pod_ip: str, entries: list[HostEntry]) -> str:
    """/etc/hosts for one pod: localhost, its own names, then its headless-Service peers."""
    ns, own = pod["metadata"]["namespace"], pod_hostname(pod)
    own_names = [own]
    sub = pod["spec"].get("subdomain")
    if sub:
        own_names = [*_names(HostEntry(pod_ip, ns, own, sub), ns), own]
    lines = [
        "# Kubernetes-managed hosts file (node agent).",
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        f"{pod_ip}\t{' '.join(own_names)}",
    ]
    lines += [f"{e.ip}\t{' '.join(_names(e, ns))}" for e in entries if e.ip != pod_ip]
    return "\n".join(lines) + "\n"
