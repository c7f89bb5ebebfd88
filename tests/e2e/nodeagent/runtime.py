"""One pod run as local processes: its volumes are prepared on the host, each container is
started by podinit inside a private mount/UTS namespace in its own process group, and its
exit is turned into container status. restartPolicy Never only: a container runs once."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes.utils import parse_quantity

from tests.e2e.nodeagent import podspec, podstatus, volumes
from tests.e2e.nodeagent.kube import Kube
from tests.e2e.nodeagent.podspec import Pod, PodAddresses, PodConfigError
from tests.e2e.nodeagent.podstatus import ContainerState

PODINIT = Path(__file__).with_name("podinit.py")
# What stands in for the container image: this checkout and the Python environment. A volume
# mounted over a folder that holds them (an emptyDir on /tmp, with the checkout under /tmp)
# must not hide them, as it would not hide files of a real image kept elsewhere.
IMAGE_PATHS = [str(Path(__file__).resolve().parents[3]), sys.prefix]
# In an image env value, this pod's address: pods here share the host's network namespace
# (each with its own 127.0.0.x), so a server that a pod would bind on 0.0.0.0 in its own
# namespace must be told its address to let two pods on this node use the same port.
POD_IP_REF = "$(POD_IP)"
MAX_TERMINATION_MESSAGE = 4096
FALLBACK_LOG_LINES = 80
RETRY_SECONDS = 1.0
_PR_SET_PDEATHSIG = 1
MEMORY_CGROUPS = Path("/sys/fs/cgroup/memory")


@dataclass
class RuntimeContext:
    """What every pod run needs from its node agent."""

    kube: Kube
    node_name: str
    host_ip: str
    state_dir: Path
    memory_dir: Path
    log_dir: Path
    python: Path
    image_env: Mapping[str, str]
    node_allocatable: Mapping[str, str]
    ca_pem: bytes
    cgroup_root: Path
    hosts_text: Callable[[Pod, str], str]
    report: Callable[[PodRun], None]
    finished: Callable[[PodRun], None]

    @property
    def created_paths_file(self) -> Path:
        """Host folders podinit had to create (removed when the agent stops)."""
        return self.state_dir / "created-host-paths"


def _die_with_parent() -> None:
    """preexec hook: SIGKILL the pod when the agent thread that started it is gone."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def signal_group(pgid: int, sig: int) -> None:
    """Signal a process group, ignoring one that is already gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def mount_namespace(pid: int, timeout: float = 5.0) -> str | None:
    """The mount namespace a container's root process entered through unshare (None if it is
    gone first); never the agent's own, so signalling its members cannot hit the host."""
    own = os.readlink("/proc/self/ns/mnt")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ns = os.readlink(f"/proc/{pid}/ns/mnt")
        except OSError:
            return None
        if ns != own:
            return ns
        time.sleep(0.01)
    return None


def signal_namespace(ns: str | None, sig: int) -> None:
    """Signal every process in mount namespace `ns`: a container's processes include those
    that left its process group (torchrun starts its ranks in new sessions), as a runtime's
    cgroup or PID namespace would."""
    if ns is None:
        return
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if os.readlink(entry / "ns" / "mnt") == ns:
                os.kill(int(entry.name), sig)


def group_alive(pgid: int) -> bool:
    """Whether any process of the group is left."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def memory_limit_bytes(container: Mapping[str, Any]) -> int | None:
    """resources.limits.memory in bytes, None when the container sets no limit."""
    raw = ((container.get("resources") or {}).get("limits") or {}).get("memory")
    return int(parse_quantity(raw)) if raw is not None else None


def make_memory_cgroup(path: Path, limit: int) -> Path | None:
    """A cgroup-v1 memory group capped at `limit` bytes, so going over it is a real OOM kill;
    None where memory cgroups cannot be created (the limit is then not enforced)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        (path / "memory.limit_in_bytes").write_text(str(limit))
    except OSError:
        return None
    return path


def oom_killed(cgroup: Path | None) -> bool:
    """Whether the kernel OOM-killed a process of this memory cgroup."""
    if cgroup is None:
        return False
    with contextlib.suppress(OSError):
        for line in (cgroup / "memory.oom_control").read_text().splitlines():
            if line.startswith("oom_kill ") and int(line.split()[1]) > 0:
                return True
    return False


def read_termination_message(path: Path, log: Path, policy: str, exit_code: int) -> str:
    """The container's termination message: its file, else (FallbackToLogsOnError and a
    failure) the end of its log, at most 4 KiB as the kubelet keeps."""
    message = ""
    if path.exists():
        message = path.read_bytes()[:MAX_TERMINATION_MESSAGE].decode(errors="replace")
    if not message and policy == "FallbackToLogsOnError" and exit_code != 0 and log.exists():
        lines = log.read_text(errors="replace").splitlines()[-FALLBACK_LOG_LINES:]
        message = "\n".join(lines)[-MAX_TERMINATION_MESSAGE:]
    return message


class PodRun:
    """A pod on this node from the moment it is seen until its processes are gone."""

    def __init__(self, ctx: RuntimeContext, pod: Pod, pod_ip: str) -> None:
        meta = pod["metadata"]
        self.ctx = ctx
        self.pod = pod
        self.namespace, self.name, self.uid = meta["namespace"], meta["name"], meta["uid"]
        self.pod_ip = pod_ip
        self.addrs = PodAddresses(pod_ip, ctx.host_ip)
        self.dir = ctx.state_dir / "pods" / self.uid
        self.memory_dir = ctx.memory_dir / self.uid
        self.start_time = podstatus.now()
        spec = pod["spec"]
        self.init = [
            ContainerState(c["name"], c.get("image", "")) for c in spec.get("initContainers") or []
        ]
        self.containers = [
            ContainerState(c["name"], c.get("image", "")) for c in spec["containers"]
        ]
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.forced_reason: dict[str, str] = {}
        self.cgroups: dict[str, Path | None] = {}
        self.namespaces: dict[str, str | None] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.deleting = False
        self.done = threading.Event()
        self._kill_timer: threading.Timer | None = None
        self._thread = threading.Thread(target=self._run, name=f"pod-{self.name}", daemon=True)

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Prepare and run the pod in a background thread."""
        self._thread.start()

    def _run(self) -> None:
        """Prepare (retrying like the kubelet), run init containers, then the containers."""
        try:
            prepared = self._prepare_until_ready()
            if prepared is not None and self._run_init(prepared):
                self._run_containers(prepared)
        except Exception as err:  # the agent must report, not die silently
            for c in self.containers:
                if not c.terminated:
                    self._mark_start_error(c, f"node agent error: {err!r}")
            print(f"node agent: pod {self.namespace}/{self.name}: {err!r}", file=sys.stderr)
        finally:
            self.ctx.report(self)
            self.done.set()
            self.ctx.finished(self)

    def _prepare_until_ready(self) -> dict[str, Any] | None:
        """Volumes and environment; a missing ConfigMap/Secret/ServiceAccount is retried
        until it appears or the pod is deleted (then None)."""
        while not self.stopping.is_set():
            try:
                return self._prepare()
            except (PodConfigError, LookupError) as err:
                reason = (
                    "CreateContainerConfigError"
                    if isinstance(err, PodConfigError)
                    else "ContainerCreating"
                )
                for c in [*self.init, *self.containers]:
                    c.waiting_reason, c.waiting_message = reason, str(err)
                self.ctx.report(self)
                self.stopping.wait(RETRY_SECONDS)
        for c in [*self.init, *self.containers]:
            if not c.terminated:
                c.exit_code, c.reason, c.finished_at = (
                    137,
                    "ContainerStatusUnknown",
                    podstatus.now(),
                )
        return None

    def _token(self, account: str, audiences: list[str], seconds: int) -> str:
        """A ServiceAccount token bound to this pod."""
        return self.ctx.kube.service_account_token(
            self.namespace, account, self.pod, audiences, seconds
        )

    def _prepare(self) -> dict[str, Any]:
        """Materialize volumes and resolve each container's env, argv and mounts."""
        self.dir.mkdir(parents=True, exist_ok=True)
        kube = self.ctx.kube
        vols = volumes.materialize(
            self.pod,
            self.dir,
            self.memory_dir,
            self.addrs,
            kube.configmap_data,
            kube.secret_data,
            self._token,
            self.ctx.node_allocatable,
            kube.claim_path,
        )
        hosts = self.dir / "hosts"
        if not hosts.exists():
            hosts.write_text(self.ctx.hosts_text(self.pod, self.pod_ip))
        specs = {}
        spec = self.pod["spec"]
        for c in [*(spec.get("initContainers") or []), *spec["containers"]]:
            specs[c["name"]] = self._container_spec(c, vols, hosts)
        return specs

    def _container_spec(
        self, c: Mapping[str, Any], vols: dict[str, Path], hosts: Path
    ) -> dict[str, Any]:
        """The podinit spec of one container (argv, env, mounts, hostname)."""
        hostname = podspec.pod_hostname(self.pod)
        image = {k: v.replace(POD_IP_REF, self.pod_ip) for k, v in self.ctx.image_env.items()}
        base = {**image, **self._service_env(), "HOSTNAME": hostname}
        env = podspec.container_env(
            self.pod,
            c,
            self.addrs,
            base,
            self.ctx.kube.configmap_data,
            self.ctx.kube.secret_data,
            self.ctx.node_allocatable,
        )
        mounts = []
        for m in c.get("volumeMounts") or []:
            if m["name"] not in vols:
                raise PodConfigError(f"{c['name']}.volumeMounts[{m['name']}]: no such volume")
            source = vols[m["name"]] / m.get("subPath", "")
            mounts.append(
                {
                    "source": str(source),
                    "target": m["mountPath"],
                    "readOnly": bool(m.get("readOnly")),
                }
            )
        if volumes.needs_service_account_folder(self.pod, c):
            folder = volumes.service_account_folder(
                self.pod, self.dir, self._token, self.ctx.ca_pem
            )
            mounts.append(
                {"source": str(folder), "target": podspec.SA_MOUNT_PATH, "readOnly": True}
            )
        if all(m["target"] != "/etc/hosts" for m in mounts):
            mounts.append({"source": str(hosts), "target": "/etc/hosts", "readOnly": True})
        limit = memory_limit_bytes(c)
        cgroup = None
        if limit is not None:
            cgroup = make_memory_cgroup(self.ctx.cgroup_root / f"{self.uid}-{c['name']}", limit)
        self.cgroups[c["name"]] = cgroup
        term = self.dir / f"{c['name']}.termination-log"
        term.touch()
        term_path = c.get("terminationMessagePath") or podspec.DEFAULT_TERMINATION_PATH
        mounts.append({"source": str(term), "target": term_path, "readOnly": False})
        return {
            "argv": podspec.container_argv(c, env),
            "env": env,
            "cwd": c.get("workingDir"),
            "hostname": hostname,
            "mounts": mounts,
            "overlayDir": str(self.dir / f"{c['name']}.overlay"),
            "createdPathsFile": str(self.ctx.created_paths_file),
            "startErrorFile": str(self.dir / f"{c['name']}.start-error"),
            "terminationLog": str(term),
            "terminationPolicy": c.get("terminationMessagePolicy", "File"),
            "cgroupProcs": str(cgroup / "cgroup.procs") if cgroup else None,
            "imagePaths": IMAGE_PATHS,
        }

    def _service_env(self) -> dict[str, str]:
        """The variables that point in-cluster clients at the apiserver."""
        port = str(self.ctx.kube.server_port)
        return {
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": port,
            "KUBERNETES_SERVICE_PORT_HTTPS": port,
            "KUBERNETES_PORT": f"tcp://127.0.0.1:{port}",
        }

    def log_path(self, container: str) -> Path:
        """Where a container's stdout and stderr go (kept after the pod is gone)."""
        return self.ctx.log_dir / f"{self.namespace}_{self.name}_{self.uid[:8]}_{container}.log"

    def _launch(self, state: ContainerState, spec: dict[str, Any]) -> subprocess.Popen[bytes]:
        """Start one container: unshare -> podinit -> exec of the command."""
        path = self.dir / f"{state.name}.json"
        path.write_text(json.dumps(spec))
        argv = [
            "unshare",
            "--mount",
            "--uts",
            "--propagation",
            "private",
            str(self.ctx.python),
            "-I",
            "-S",
            str(PODINIT),
            str(path),
        ]
        with self.log_path(state.name).open("ab") as log:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={"PATH": spec["env"].get("PATH", os.environ.get("PATH", ""))},
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        state.pid, state.started_at = proc.pid, podstatus.now()
        with self.lock:
            self.procs[state.name] = proc
        self.namespaces[state.name] = mount_namespace(proc.pid)
        return proc

    def _wait(self, state: ContainerState, spec: dict[str, Any]) -> None:
        """Wait for a container's process, kill what it left in its group, record the exit."""
        proc = self.procs[state.name]
        rc = proc.wait()
        signal_group(proc.pid, signal.SIGKILL)
        signal_namespace(self.namespaces.get(state.name), signal.SIGKILL)
        code = 128 - rc if rc < 0 else rc
        start_error = Path(spec["startErrorFile"]).exists()
        forced = self.forced_reason.get(state.name)
        state.exit_code = code
        oom = oom_killed(self.cgroups.get(state.name))
        state.reason = forced or podstatus.exit_reason(code, oom, start_error)
        state.finished_at = podstatus.now()
        state.message = read_termination_message(
            Path(spec["terminationLog"]), self.log_path(state.name), spec["terminationPolicy"], code
        )

    def _mark_start_error(self, c: ContainerState, message: str) -> None:
        """A container that could not be started at all."""
        c.exit_code, c.reason, c.message = 128, "StartError", message
        c.finished_at = podstatus.now()

    def _run_init(self, specs: dict[str, Any]) -> bool:
        """Init containers one after another; False (pod Failed) when one fails."""
        for state in self.init:
            if self.stopping.is_set():
                return False
            self._launch(state, specs[state.name])
            self.ctx.report(self)
            self._wait(state, specs[state.name])
            if state.exit_code != 0:
                for c in self.containers:
                    c.waiting_reason = "PodInitializing"
                return False
        return True

    def _run_containers(self, specs: dict[str, Any]) -> None:
        """Start every container, report Running, wait for all of them."""
        if self.stopping.is_set():
            return
        for state in self.containers:
            self._launch(state, specs[state.name])
        self.ctx.report(self)
        waiters = [
            threading.Thread(target=self._wait_and_report, args=(s, specs[s.name]), daemon=True)
            for s in self.containers[1:]
        ]
        for w in waiters:
            w.start()
        self._wait(self.containers[0], specs[self.containers[0].name])
        for w in waiters:
            w.join()

    def _wait_and_report(self, state: ContainerState, spec: dict[str, Any]) -> None:
        """Wait for a non-first container and report its exit."""
        self._wait(state, spec)
        self.ctx.report(self)

    # ---- control from the agent ------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The pod status to report now."""
        return podstatus.pod_status(
            self.pod_ip, self.ctx.host_ip, self.start_time, self.init, self.containers
        )

    def live_groups(self) -> list[int]:
        """Process groups of this pod that still have a member."""
        with self.lock:
            return [p.pid for p in self.procs.values() if group_alive(p.pid)]

    def signal(self, sig: int, reason: str | None = None) -> None:
        """Send `sig` to every container's process group; `reason` overrides terminated.reason."""
        with self.lock:
            procs = dict(self.procs)
        for name, proc in procs.items():
            if reason:
                self.forced_reason[name] = reason
            signal_group(proc.pid, sig)
            if sig == signal.SIGKILL:
                signal_namespace(self.namespaces.get(name), sig)

    def terminate(self, grace_seconds: float) -> None:
        """Graceful stop: SIGTERM now, SIGKILL after the grace period."""
        self.stopping.set()
        self.signal(signal.SIGTERM)
        if self._kill_timer is None and not self.done.is_set():
            self._kill_timer = threading.Timer(grace_seconds, self.signal, args=(signal.SIGKILL,))
            self._kill_timer.daemon = True
            self._kill_timer.start()

    def kill(self) -> None:
        """Immediate stop (forced deletion, node killed, agent stopping)."""
        self.stopping.set()
        self.signal(signal.SIGKILL)

    def join(self, timeout: float) -> bool:
        """Wait for the pod's thread; True when it has finished."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def write_hosts(self, text: str) -> None:
        """Rewrite /etc/hosts in place: the pods bind-mount this very inode."""
        hosts = self.dir / "hosts"
        if not hosts.exists() or hosts.read_text() == text:
            return
        with hosts.open("r+") as f:
            f.write(text)
            f.truncate()

    def cleanup(self) -> None:
        """Remove the pod's host folders once its processes are gone (their namespaces, and
        the mounts in them, went with the last process)."""
        if self._kill_timer is not None:
            self._kill_timer.cancel()
        deadline = time.monotonic() + 5
        while self.live_groups() and time.monotonic() < deadline:
            time.sleep(0.05)
        for cgroup in self.cgroups.values():
            if cgroup is not None:
                with contextlib.suppress(OSError):
                    cgroup.rmdir()
        shutil.rmtree(self.dir, ignore_errors=True)
        shutil.rmtree(self.memory_dir, ignore_errors=True)
