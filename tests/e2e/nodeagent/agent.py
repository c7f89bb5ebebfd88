"""The node agent: a kubelet stand-in that registers a Node, keeps it Ready, and runs the pods
bound to it as local process trees (see runtime.py), with fault injection for tests."""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import os
import shutil
import signal
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kubernetes.client.rest import ApiException

from tests.e2e.nodeagent import node, podspec
from tests.e2e.nodeagent.informer import Informer
from tests.e2e.nodeagent.kube import MERGE_PATCH, Kube, Obj
from tests.e2e.nodeagent.runtime import MEMORY_CGROUPS, PodRun, RuntimeContext

DEFAULT_PYTHON = Path.home() / ".cache" / "kubetune" / "venv" / "bin" / "python"
HOST_IP = "127.0.0.1"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_ip_lock = threading.Lock()
# 127.0.0.2, .3, ... then 127.0.1.x: host parts .0, .1 and .255 are skipped. Never reused
# within a test process, so a recreated pod never inherits a stale /etc/hosts line; an
# address with any socket on it (e.g. TIME_WAIT left by an earlier test run) is skipped too.
_ip_counter = itertools.count(2)


def addresses_in_use() -> set[str]:
    """IPv4 addresses that any TCP/UDP socket on this machine is bound to (incl. TIME_WAIT),
    from /proc/net/{tcp,udp}{,6}."""
    used: set[str] = set()
    for table in ("tcp", "udp", "tcp6", "udp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
                local = line.split()[1].split(":")[0]
                used.add(str(ipaddress.IPv4Address(bytes.fromhex(local[-8:])[::-1])))
    return used


def next_pod_ip() -> str:
    """A fresh, unused loopback address for a pod (Linux routes all of 127/8 to lo)."""
    with _ip_lock:
        used = addresses_in_use()
        while True:
            n = next(_ip_counter)
            ip = str(ipaddress.IPv4Address("127.0.0.0") + n)
            if n % 256 not in (0, 1, 255) and ip not in used:
                return ip


def image_env(python: Path, extra: Mapping[str, str]) -> dict[str, str]:
    """What the container image would define: the project environment first on PATH."""
    return {
        "PATH": f"{python.parent}:{SYSTEM_PATH}",
        "HOME": os.environ.get("HOME", "/root"),
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "NO_PROXY": "127.0.0.1,localhost,.svc,.cluster.local",
        "no_proxy": "127.0.0.1,localhost,.svc,.cluster.local",
        "HF_HUB_OFFLINE": "1",
        **extra,
    }


class NodeAgent:
    """Registers Node `name` and runs the pods the scheduler binds to it.

    restartPolicy Never only: each container runs once (other policies are run the same way).
    """

    def __init__(
        self,
        kubeconfig: Path,
        state_dir: Path,
        name: str = "e2e-node",
        cpu: str = "8",
        memory: str = "16Gi",
        max_pods: int = 110,
        labels: Mapping[str, str] | None = None,
        python: Path = DEFAULT_PYTHON,
        extra_env: Mapping[str, str] | None = None,
        heartbeat_seconds: float = 10.0,
    ) -> None:
        self.name = name
        self.kube = Kube(kubeconfig)
        self.state_dir = state_dir
        self.labels = dict(labels or {})
        self.capacity = node.capacity(cpu, memory, max_pods)
        self.heartbeat_seconds = heartbeat_seconds
        self.runs: dict[str, PodRun] = {}  # by pod uid
        self.lock = threading.RLock()
        self.hosts_lock = threading.Lock()
        self.dead = False
        self._stop = threading.Event()
        self.log_dir = state_dir / "logs"
        memory_dir = Path("/dev/shm") / f"kubetune-nodeagent-{os.getpid()}-{name}"
        self.ctx = RuntimeContext(
            kube=self.kube,
            node_name=name,
            host_ip=HOST_IP,
            state_dir=state_dir,
            memory_dir=memory_dir,
            log_dir=self.log_dir,
            python=python,
            image_env=image_env(python, extra_env or {}),
            node_allocatable=self.capacity,
            ca_pem=self.kube.ca_cert_pem(),
            cgroup_root=MEMORY_CGROUPS / f"kubetune-nodeagent-{os.getpid()}-{name}",
            hosts_text=self._hosts_text,
            report=self._report,
            finished=self._finished,
        )
        self.pods = Informer(self.kube, self.kube.core.list_pod_for_all_namespaces, self._on_pod)
        self.services = Informer(
            self.kube, self.kube.core.list_service_for_all_namespaces, self._on_service
        )
        self._heartbeat = threading.Thread(target=self._beat, name="node-heartbeat", daemon=True)

    # ---- start / stop ----------------------------------------------------------------------

    def start(self, timeout: float = 30) -> NodeAgent:
        """Register the Node, start heartbeats and the pod/service watches."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._register()
        self._drop_controller_taints()
        self._heartbeat.start()
        self.services.start()
        self.pods.start()
        for inf in (self.services, self.pods):
            if not inf.synced.wait(timeout):
                raise TimeoutError(f"node agent {self.name}: no initial list within {timeout}s")
        return self

    def stop(self) -> None:
        """Kill every pod process, force-remove this node's pods, delete the Node and Lease,
        remove what was created on the host."""
        self._stop.set()
        self.dead = True
        self.pods.stop()
        self.services.stop()
        with self.lock:
            runs = list(self.runs.values())
        for run in runs:
            run.kill()
        for run in runs:
            run.join(15)
            run.cleanup()
        for pod in self.pods.snapshot():
            if pod["spec"].get("nodeName") == self.name:
                with contextlib.suppress(ApiException):
                    self.kube.remove_pod(
                        pod["metadata"]["namespace"],
                        pod["metadata"]["name"],
                        pod["metadata"]["uid"],
                    )
        with contextlib.suppress(ApiException):
            self.kube.call(
                self.kube.coordination.delete_namespaced_lease, self.name, node.LEASE_NAMESPACE
            )
        with contextlib.suppress(ApiException):
            self.kube.call(self.kube.core.delete_node, self.name)
        self._heartbeat.join(timeout=self.heartbeat_seconds + 5)
        self._remove_created_paths()
        shutil.rmtree(self.ctx.memory_dir, ignore_errors=True)
        shutil.rmtree(self.state_dir / "pods", ignore_errors=True)
        with contextlib.suppress(OSError):
            self.ctx.cgroup_root.rmdir()

    def _remove_created_paths(self) -> None:
        """Remove host folders podinit created as mount points, if still empty."""
        listed = self.ctx.created_paths_file
        if not listed.exists():
            return
        for line in sorted(set(listed.read_text().split()), key=len, reverse=True):
            path = Path(line)
            with contextlib.suppress(OSError):
                if path.is_dir():
                    path.rmdir()
                elif path.stat().st_size == 0:
                    path.unlink()
        listed.unlink()

    # ---- node registration and heartbeat ---------------------------------------------------

    def _register(self) -> None:
        """Create (or take over) the Node and report its status."""
        body = node.node_object(self.name, self.labels)
        try:
            self.kube.call(self.kube.core.create_node, body)
        except ApiException as err:
            if err.status != 409:
                raise
            self.kube.call(
                self.kube.core.patch_node,
                self.name,
                {
                    "metadata": {"labels": body["metadata"]["labels"]},
                    "spec": {"taints": None, "unschedulable": None},
                },
                _content_type=MERGE_PATCH,
            )
        status = node.node_status(self.name, HOST_IP, self.capacity)
        self.kube.call(
            self.kube.core.patch_node_status,
            self.name,
            {"status": status},
            _content_type=MERGE_PATCH,
        )
        self._renew_lease()

    def _renew_lease(self) -> None:
        """Renew (or create) the node Lease: the node controller's liveness signal."""
        patch = {
            "spec": {
                "holderIdentity": self.name,
                "renewTime": node.micro_now(),
                "leaseDurationSeconds": node.LEASE_SECONDS,
            }
        }
        found = self.kube.call(
            self.kube.coordination.patch_namespaced_lease,
            self.name,
            node.LEASE_NAMESPACE,
            patch,
            _content_type=MERGE_PATCH,
        )
        if found is None:
            current = self.kube.call(self.kube.core.read_node, self.name) or {
                "metadata": {"uid": ""}
            }
            self.kube.call(
                self.kube.coordination.create_namespaced_lease,
                node.LEASE_NAMESPACE,
                node.lease_object(self.name, current["metadata"]["uid"]),
            )

    def _beat(self) -> None:
        """Every heartbeat: renew the Lease, refresh Ready, drop controller taints."""
        while not self._stop.wait(self.heartbeat_seconds):
            if self.dead:
                continue
            try:
                self._renew_lease()
                patch = {"status": {"conditions": node.conditions(True)}}
                self.kube.call(
                    self.kube.core.patch_node_status, self.name, patch, _content_type=MERGE_PATCH
                )
                self._drop_controller_taints()
            except Exception as err:
                print(f"node agent {self.name}: heartbeat failed: {err!r}", file=sys.stderr)

    def _drop_controller_taints(self) -> None:
        """Remove not-ready/unreachable taints the node lifecycle controller left behind."""
        current = self.kube.call(self.kube.core.read_node, self.name)
        if current is None:
            return
        kept = node.without_controller_taints(current["spec"].get("taints"))
        if kept is not None:
            self.kube.call(
                self.kube.core.patch_node,
                self.name,
                {"spec": {"taints": kept}},
                _content_type=MERGE_PATCH,
            )

    # ---- pods ------------------------------------------------------------------------------

    def _on_pod(self, event: str, pod: Obj) -> None:
        """React to a pod change: start new pods of this node, honour deletions."""
        if not self.dead and pod["spec"].get("nodeName") == self.name:
            self._sync_pod(event, pod)
        self._refresh_hosts()

    def _on_service(self, event: str, service: Obj) -> None:
        """Headless Services decide which names resolve: refresh the hosts files."""
        self._refresh_hosts()

    def _sync_pod(self, event: str, pod: Obj) -> None:
        """Bring one pod of this node in line with its API object."""
        meta = pod["metadata"]
        with self.lock:
            run = self.runs.get(meta["uid"])
            if event == "DELETED":
                if run is not None:
                    run.kill()
                return
            if meta.get("deletionTimestamp"):
                self._delete(pod, run)
                return
            if run is None and pod.get("status", {}).get("phase") in (None, "Pending"):
                run = PodRun(self.ctx, pod, next_pod_ip())
                self.runs[meta["uid"]] = run
                run.start()
            elif run is not None:
                run.pod = pod

    def _delete(self, pod: Obj, run: PodRun | None) -> None:
        """Graceful deletion: stop the processes within the grace period, then remove the pod."""
        meta = pod["metadata"]
        if run is None:
            self.kube.remove_pod(meta["namespace"], meta["name"], meta["uid"])
            return
        run.deleting = True
        if run.done.is_set():
            self._finished(run)
        else:
            run.terminate(float(meta.get("deletionGracePeriodSeconds", 30)))

    def _finished(self, run: PodRun) -> None:
        """A pod's processes are gone: remove it if it is being deleted."""
        if not run.deleting or self.dead:
            return
        with self.lock:
            if self.runs.get(run.uid) is not run:
                return
            del self.runs[run.uid]
        run.cleanup()
        with contextlib.suppress(ApiException):
            self.kube.remove_pod(run.namespace, run.name, run.uid)

    def _report(self, run: PodRun) -> None:
        """Patch the pod's status (not while the node is dead)."""
        if self.dead:
            return
        try:
            self.kube.patch_pod_status(run.namespace, run.name, run.status())
        except ApiException as err:
            print(
                f"node agent {self.name}: status of {run.namespace}/{run.name}: {err.status} {err.reason}",
                file=sys.stderr,
            )
        self._refresh_hosts()

    # ---- /etc/hosts ------------------------------------------------------------------------

    def _cluster_pods(self) -> list[Obj]:
        """Every pod, with this node's running pods shown as running at their address even
        before the status patch comes back through the watch."""
        with self.lock:
            local = {run.uid: run for run in self.runs.values()}
        pods = []
        for pod in self.pods.snapshot():
            run = local.get(pod["metadata"]["uid"])
            if run is not None:
                status = run.status()
                pod = {
                    **pod,
                    "status": {
                        **pod.get("status", {}),
                        "podIP": run.pod_ip,
                        "phase": status["phase"],
                    },
                }
            pods.append(pod)
        return pods

    def _hosts_text(self, pod: Obj, pod_ip: str) -> str:
        """/etc/hosts content for one pod of this node."""
        entries = podspec.host_entries(self._cluster_pods(), self.services.snapshot())
        return podspec.hosts_file(pod, pod_ip, entries)

    def _refresh_hosts(self) -> None:
        """Rewrite every local pod's /etc/hosts when the set of published names changed."""
        with self.hosts_lock:
            entries = podspec.host_entries(self._cluster_pods(), self.services.snapshot())
            with self.lock:
                runs = [r for r in self.runs.values() if not r.done.is_set()]
            for run in runs:
                with contextlib.suppress(OSError):
                    run.write_hosts(podspec.hosts_file(run.pod, run.pod_ip, entries))

    # ---- queries and fault injection -------------------------------------------------------

    def _run_of(self, namespace: str, name: str) -> PodRun:
        """The newest local run of pod namespace/name."""
        with self.lock:
            found = [r for r in self.runs.values() if (r.namespace, r.name) == (namespace, name)]
        if not found:
            raise KeyError(f"pod {namespace}/{name} is not running on node {self.name}")
        return found[-1]

    def pod_ip(self, namespace: str, name: str) -> str:
        """The loopback address given to a pod of this node."""
        return self._run_of(namespace, name).pod_ip

    def logs(self, namespace: str, name: str, container: str | None = None) -> str:
        """A container's output (first container by default); kept after the pod is gone."""
        matches = sorted(
            self.log_dir.glob(f"{namespace}_{name}_*_{container or '*'}.log"), key=os.path.getmtime
        )
        return matches[-1].read_text(errors="replace") if matches else ""

    def kill_pod(
        self, namespace: str, name: str, sig: int = signal.SIGKILL, reason: str | None = None
    ) -> None:
        """Fault: send `sig` to every process of the pod. `reason` overrides the reported
        terminated.reason (e.g. "OOMKilled" with SIGKILL -> exit 137, reason OOMKilled)."""
        self._run_of(namespace, name).signal(sig, reason)

    def kill_node(self, report_not_ready: bool = False) -> None:
        """Fault: the node dies. Every pod process is SIGKILLed, heartbeats and status
        reports stop, deletions are no longer honoured; the node controller marks the node
        NotReady after its grace period (at once if `report_not_ready`)."""
        self.dead = True
        with self.lock:
            runs = list(self.runs.values())
        for run in runs:
            run.kill()
        if report_not_ready:
            patch = {"status": {"conditions": node.conditions(False)}}
            self.kube.call(
                self.kube.core.patch_node_status, self.name, patch, _content_type=MERGE_PATCH
            )

    def live_process_groups(self) -> list[int]:
        """Process groups of pods that still have a member (empty after stop())."""
        with self.lock:
            runs = list(self.runs.values())
        return [g for r in runs for g in r.live_groups()]

    def running_pods(self) -> list[tuple[str, str]]:
        """namespace/name of the pods whose processes run now."""
        with self.lock:
            return [(r.namespace, r.name) for r in self.runs.values() if r.live_groups()]

    def __repr__(self) -> str:
        return f"NodeAgent({self.name!r})"

    def describe(self) -> dict[str, Any]:
        """A summary for failure messages."""
        with self.lock:
            return {
                r.uid: {
                    "pod": f"{r.namespace}/{r.name}",
                    "ip": r.pod_ip,
                    "status": r.status()["phase"],
                }
                for r in self.runs.values()
            }


def leftover_mounts(marker: str) -> list[str]:
    """Mounts in any process's namespace whose source or target mentions `marker` (a state
    folder): empty once every pod of an agent has exited."""
    found = []
    for info in Path("/proc").glob("[0-9]*/mountinfo"):
        with contextlib.suppress(OSError):
            found += [
                f"{info.parent.name}: {line}"
                for line in info.read_text().splitlines()
                if marker in line
            ]
    return found
