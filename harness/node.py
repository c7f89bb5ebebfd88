"""One real Kubernetes node for the e2e tests: kubelet + containerd + runc, pods on a bridge the
harness creates, CoreDNS for cluster names, the `kubernetes` Service forwarded to the test
control plane (harness.controlplane) on loopback.

Everything it changes on the machine is undone by `Node.stop` and, in case an earlier run
crashed, by `clean_leftovers` before it starts (harness.nodeclean): processes, pod
processes in the /kubepods cgroups, mounts, the bridge, the no-egress rule, the iptables chains
and sysctls kubelet changes, and the fixed paths kubelet and containerd write outside their
configured folders. Images live in a store that outlives the node (IMAGE_STORE), so a warm run
imports nothing; what the node ran is gone.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import string
import subprocess
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import certs, kubeconfig, network, nodeclean, procs
from harness.binaries import REPO_ROOT
from harness.controlplane import ControlPlane, ControlPlaneError, log_tail

NODE_NAME = "kubetune-node"
STATE_DIR = nodeclean.STATE_DIR
IMAGE_STORE = Path.home() / ".cache" / "kubetune" / "node" / "containerd"
BUILD_SCRIPT = REPO_ROOT / "hack" / "build-node.sh"
CONF_DIR = Path(__file__).with_name("nodeconf")
CNI_BIN = Path("/usr/lib/cni")
RUNC = Path("/usr/sbin/runc")
PAUSE_IMAGE = "localhost/kubetune/pause:1"
MACHINE_LOCK = Path("/run/lock/kubetune-node.lock")
REQUIRED = ("kubelet", "containerd", "containerd-shim-runc-v2", "ctr", "crictl", "coredns", "pause")


class NodeError(ControlPlaneError):
    """The node did not come up; the message names the component and its log."""


def bin_dir() -> Path:
    """$KUBETUNE_NODE_BIN_DIR, else the folder hack/build-node.sh builds into."""
    if os.environ.get("KUBETUNE_NODE_BIN_DIR"):
        return Path(os.environ["KUBETUNE_NODE_BIN_DIR"])
    out = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--print-dir"], check=True, capture_output=True, text=True
    )
    return Path(out.stdout.strip())


def missing_prerequisites(bins: Path) -> list[str]:
    """What this machine lacks to run a node: root, built binaries, Debian packages."""
    lacking = [] if os.geteuid() == 0 else ["root"]
    lacking += [str(bins / b) for b in REQUIRED if not os.access(bins / b, os.X_OK)]
    lacking += [str(p) for p in (RUNC, CNI_BIN / "bridge") if not p.exists()]
    lacking += [t for t in ("iptables", "ip") if shutil.which(t) is None]
    return lacking


def _run(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """A node tool's output; NodeError with its stderr when it fails."""
    out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise NodeError(f"{' '.join(argv)} exited {out.returncode}: {out.stderr.strip()}")
    return out


def render(template: str, values: dict[str, str]) -> str:
    """A config file of nodeconf/ with its ${...} filled in."""
    return string.Template((CONF_DIR / template).read_text()).substitute(values)


@dataclass
class Node:
    """A running node and how tests reach into it."""

    cp: ControlPlane
    bins: Path
    state: Path = STATE_DIR
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    startup_seconds: float = 0.0
    name: str = NODE_NAME
    lock_fd: int = -1

    @property
    def socket(self) -> Path:
        return self.state / "containerd.sock"

    @property
    def log_dir(self) -> Path:
        return self.state / "logs"

    @property
    def pod_log_dir(self) -> Path:
        """Where kubelet writes container logs: <ns>_<pod>_<uid>/<container>/<n>.log."""
        return self.state / "pod-logs"

    def values(self) -> dict[str, str]:
        """What the nodeconf/ templates need."""
        return {
            "state": str(self.state),
            "image_store": str(IMAGE_STORE),
            "socket": str(self.socket),
            "pause_image": PAUSE_IMAGE,
            "runc": str(RUNC),
            "cni_bin": str(CNI_BIN),
            "bridge": network.BRIDGE,
            "pod_cidr": network.POD_CIDR,
            "service_cidr": network.SERVICE_CIDR,
            "node_ip": network.NODE_IP,
            "cluster_domain": network.CLUSTER_DOMAIN,
            "ca_cert": str(self.cp.cert_files.ca_cert),
        }

    # -- runtime -----------------------------------------------------------------------------
    def ctr(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """ctr in the CRI namespace (always the absolute socket path)."""
        return _run(
            [str(self.bins / "ctr"), "-a", str(self.socket), "-n", "k8s.io", *args], timeout
        )

    def crictl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """crictl against the node's containerd."""
        return _run([str(self.bins / "crictl"), "-r", f"unix://{self.socket}", *args], timeout)

    def container_pid(self, namespace: str, pod: str, container: str) -> int:
        """The host PID of a running container's main process."""
        return int(self._inspect(namespace, pod, container)["info"]["pid"])

    def runtime_spec(self, namespace: str, pod: str, container: str) -> dict[str, object]:
        """The OCI runtime spec runc ran a running container with (root, process, mounts)."""
        return dict(self._inspect(namespace, pod, container)["info"]["runtimeSpec"])

    def _inspect(self, namespace: str, pod: str, container: str) -> dict[str, Any]:
        ids = self.crictl(
            "ps", "-q", "--state", "Running", "--name", f"^{container}$",
            "--label", f"io.kubernetes.pod.namespace={namespace}",
            "--label", f"io.kubernetes.pod.name={pod}",
        ).stdout.split()  # fmt: skip
        if len(ids) != 1:
            raise NodeError(f"{len(ids)} running containers {container} in {namespace}/{pod}")
        return dict(json.loads(self.crictl("inspect", ids[0]).stdout))

    def kill_container(
        self, namespace: str, pod: str, container: str, sig: signal.Signals = signal.SIGKILL
    ) -> None:
        """Signal a container's main process from the host (SIGKILL: as a crash would end it;
        the pod then reports exit code 137)."""
        os.kill(self.container_pid(namespace, pod, container), sig)

    def images(self) -> set[str]:
        """Names of the images in the node's store."""
        return set(self.ctr("images", "ls", "-q").stdout.split())

    def import_image(self, source: Path, ref: str) -> bool:
        """Import `ref` unless the store has it already; True if imported. `source` is an OCI
        image layout folder (only the layers the store has not unpacked are sent) or a docker
        archive. Older tags of the same repository are removed: their layers the new image
        does not share go with them."""
        if ref in self.images():
            return False
        if source.is_dir():
            self._import_from_layout(source, ref)
        else:
            self.ctr("images", "import", "--local", "--discard-unpacked-layers", str(source))
        if ref not in self.images():
            raise NodeError(f"{source} imported but {ref} is not among {sorted(self.images())}")
        repository = ref.rsplit(":", 1)[0]
        older = sorted(i for i in self.images() if i.startswith(repository + ":") and i != ref)
        if older:
            self.ctr("images", "rm", *older)
        return True

    def unpacked_layers(self) -> set[str]:
        """Chain IDs of the layers the store has unpacked (its committed snapshots)."""
        out = self.ctr("snapshots", "ls").stdout.splitlines()[1:]
        return {f[0] for f in (line.split() for line in out) if f and f[-1] == "Committed"}

    def _import_from_layout(self, layout: Path, ref: str) -> None:
        from harness import images

        layers = images.layers_to_send(layout, ref, self.unpacked_layers())
        argv = [str(self.bins / "ctr"), "-a", str(self.socket), "-n", "k8s.io", "images",
                "import", "--local", "--discard-unpacked-layers", "-"]  # fmt: skip
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err
            )
            assert proc.stdin is not None
            # ctr exiting early breaks the pipe: its stderr says why.
            with contextlib.suppress(BrokenPipeError), proc.stdin:
                images.write_oci_stream(layout, ref, layers, proc.stdin)
            proc.wait(timeout=600)
            err.seek(0)
            message = err.read().decode(errors="replace")
        if proc.returncode != 0:
            raise NodeError(f"ctr images import of {ref} exited {proc.returncode}: {message}")

    def start_runtime(self) -> None:
        """containerd, with its config, until its socket answers."""
        self._spawn(
            "containerd",
            [str(self.bins / "containerd"), "--config", str(self.state / "etc/containerd.toml")],
            env={**os.environ, "PATH": f"{self.bins}:{os.environ.get('PATH', '')}"},
        )
        self._wait("containerd socket", self._runtime_answers, 60, ("containerd",))

    def _runtime_answers(self) -> bool:
        try:
            self.ctr("version", timeout=5)
            return True
        except (NodeError, subprocess.TimeoutExpired):
            return False

    def start_kubelet(self) -> None:
        """kubelet, until the Node is Ready."""
        self._spawn(
            "kubelet",
            [
                str(self.bins / "kubelet"),
                f"--config={self.state / 'etc/kubelet.yaml'}",
                f"--kubeconfig={self.state / 'etc/kubeconfig-kubelet'}",
                f"--hostname-override={self.name}",
                f"--node-ip={network.NODE_IP}",
                f"--root-dir={self.state / 'kubelet'}",
                "--v=1",
            ],
        )
        self._wait("node Ready", self.ready, 120, ("kubelet", "containerd"))

    def stop_kubelet_and_runtime(self) -> None:
        """Stop kubelet and containerd as a node restart would (SIGTERM); pods keep running
        under their shims, as they do on a real node."""
        for name in ("kubelet", "containerd"):
            proc = self.processes.pop(name, None)
            if proc is not None:
                procs.stop(proc, grace_seconds=20)
            (self.state / "pids" / f"{name}.pid").unlink(missing_ok=True)

    def ready(self) -> bool:
        out = self.cp.kubectl(
            "get", "node", self.name, "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}", check=False,
        )  # fmt: skip
        return out.returncode == 0 and out.stdout.strip() == "True"

    # -- lifecycle ---------------------------------------------------------------------------
    def stop(self) -> list[str]:
        """Tear everything down; returns what could not be removed (empty when clean)."""
        if self.processes.get("kubelet") is not None:
            self.cp.kubectl("delete", "node", self.name, "--wait=false", check=False)
        for name in ("kubelet", "coredns", "apiproxy"):
            proc = self.processes.pop(name, None)
            if proc is not None:
                procs.stop(proc)
        left = nodeclean.clean_leftovers(self.bins, self.state)
        release_machine(self.lock_fd)
        self.lock_fd = -1
        return left

    def _spawn(
        self, name: str, argv: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        proc = procs.spawn(argv, self.log_dir / f"{name}.log", env)
        self.processes[name] = proc
        (self.state / "pids").mkdir(parents=True, exist_ok=True)
        (self.state / "pids" / f"{name}.pid").write_text(str(proc.pid))
        return proc

    def _wait(self, what: str, check: object, timeout: float, watch: Iterable[str] = ()) -> None:
        assert callable(check)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name in watch:
                proc = self.processes.get(name)
                if proc is not None and proc.poll() is not None:
                    log = self.log_dir / f"{name}.log"
                    raise NodeError(
                        f"{name} exited with {proc.returncode} while waiting for {what}; "
                        f"log: {log}\n{log_tail(log)}"
                    )
            if check():
                return
            time.sleep(0.25)
        raise NodeError(
            f"timed out after {timeout:.0f}s waiting for {what}; logs in {self.log_dir}"
        )


def _write_files(node: Node) -> None:
    """Configs, certificates and kubeconfigs of kubelet, containerd, CNI and CoreDNS."""
    state, values = node.state, node.values()
    for sub in ("etc", "pki", "logs", "pids", "cni/net.d", "pod-logs", "kubelet"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    IMAGE_STORE.mkdir(parents=True, exist_ok=True)
    (state / "etc/containerd.toml").write_text(render("containerd.toml", values))
    (state / "etc/kubelet.yaml").write_text(render("kubelet.yaml", values))
    (state / "etc/Corefile").write_text(render("Corefile", values))
    (state / "cni/net.d/10-kubetune-test.conflist").write_text(render("cni.conflist", values))
    (state / "certs.d/_default").mkdir(parents=True, exist_ok=True)
    shutil.copy(CONF_DIR / "hosts.toml", state / "certs.d/_default/hosts.toml")
    # Pods get the cluster DNS from kubelet; this is the node's own (empty) resolver config.
    (state / "etc/resolv.conf").write_text("options ndots:5\n")
    ca = certs.load_ca(node.cp.cert_files)
    pki = state / "pki"
    certs.write_pair(
        pki,
        "kubelet",
        certs.issue(*ca, node.name, server=True, dns_names=(node.name,), ips=(network.NODE_IP,)),
    )
    client_crt, client_key = certs.write_pair(
        pki,
        "kubelet-client",
        certs.issue(*ca, f"system:node:{node.name}", organization="system:nodes"),
    )
    dns_crt, dns_key = certs.write_pair(
        pki, "coredns", certs.issue(*ca, "system:kubetune-test-coredns")
    )
    ca_path = node.cp.cert_files.ca_cert
    kubeconfig.write_cert_kubeconfig(
        state / "etc/kubeconfig-kubelet", node.cp.server, ca_path, client_crt, client_key
    )
    kubeconfig.write_cert_kubeconfig(
        state / "etc/kubeconfig-coredns", node.cp.server, ca_path, dns_crt, dns_key
    )


def _setup_network() -> None:
    """The pod bridge with the node and `kubernetes` Service addresses, and the rule that
    nothing from the pod subnet leaves by another interface."""
    run = nodeclean.run
    run("ip", "link", "add", network.BRIDGE, "type", "bridge")
    run("ip", "addr", "add", f"{network.NODE_IP}/24", "dev", network.BRIDGE)
    run("ip", "addr", "add", f"{network.API_SERVICE_IP}/32", "dev", network.BRIDGE)
    run("ip", "link", "set", network.BRIDGE, "up")
    run("iptables", "-w", "-I", "FORWARD", "1", *nodeclean.NO_EGRESS_RULE)


def _import_pause(node: Node) -> None:
    """The sandbox image: the static pause binary as the only file of a one-layer image."""
    from harness import images

    archive = images.single_binary_archive(
        node.bins / "pause", "/pause", PAUSE_IMAGE, node.state / "pause.tar", user="65535:65535"
    )
    node.import_image(archive, PAUSE_IMAGE)


def hold_machine() -> int:
    """One node per machine: the bridge, the iptables rules and kubelet's fixed paths are
    machine-wide, and the leftover cleanup would tear down another run's node. Blocks until
    an earlier run on this machine has stopped its node; returns the held lock's descriptor."""
    MACHINE_LOCK.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(MACHINE_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"waiting for another test node on this machine to stop ({MACHINE_LOCK})")
        fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def release_machine(fd: int) -> None:
    """Let the next run on this machine start its node."""
    if fd >= 0:
        os.close(fd)


def start_node(cp: ControlPlane, bins: Path | None = None) -> Node:
    """Clean up after any earlier run, then bring the node up: bridge, containerd, the
    apiserver forwarder, kubelet (until Ready) and CoreDNS. Stops what it started on failure."""
    started = time.monotonic()
    bins = bins or bin_dir()
    lacking = missing_prerequisites(bins)
    if lacking:
        raise NodeError(
            "cannot start a node, missing: " + ", ".join(lacking) + " (hack/build-node.sh, "
            "hack/install-node-packages.sh)"
        )
    lock_fd = hold_machine()
    started = time.monotonic()
    leftovers = nodeclean.clean_leftovers(bins, STATE_DIR)
    if leftovers:
        release_machine(lock_fd)
        raise NodeError(f"an earlier node left what cannot be removed: {leftovers}")
    node = Node(cp=cp, bins=bins, lock_fd=lock_fd)
    try:
        _write_files(node)
        nodeclean.record_sysctls(node.state)
        _setup_network()
        node.start_runtime()
        _import_pause(node)
        api_port = cp.server.rsplit(":", 1)[1]
        node._spawn(
            "apiproxy",
            [
                str(Path(os.sys.executable)),
                "-m",
                "harness.tcpproxy",
                network.API_SERVICE_IP,
                str(network.API_SERVICE_PORT),
                "127.0.0.1",
                api_port,
            ],
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        )
        cp.kubectl("apply", "-f", str(CONF_DIR / "coredns-rbac.yaml"))
        node._spawn("coredns", [str(bins / "coredns"), "-conf", str(node.state / "etc/Corefile")])
        node.start_kubelet()
    except BaseException:
        node.stop()
        raise
    node.startup_seconds = time.monotonic() - started
    return node
