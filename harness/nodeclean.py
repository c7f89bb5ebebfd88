"""Undo everything the test node (harness.node) changes on the machine. Run at teardown,
and before a node starts in case an earlier run crashed: each step is safe to repeat and
touches only what the node made (its state folder, its bridge, rules with its comment, the
/kubepods cgroups and kubelet's fixed paths, which only the test node uses on this machine).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from harness import network

STATE_DIR = Path(os.environ.get("KUBETUNE_NODE_STATE", "/var/tmp/kubetune-node"))
NO_EGRESS_COMMENT = "kubetune-test-no-egress"
NO_EGRESS_RULE = (
    "-s", network.POD_CIDR, "!", "-o", network.BRIDGE,
    "-m", "comment", "--comment", NO_EGRESS_COMMENT, "-j", "DROP",
)  # fmt: skip
# Kernel settings kubelet (and the CNI bridge plugin, ip_forward) change at start.
SYSCTLS = (
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
    "net.ipv4.ip_forward",
)
KUBELET_CHAINS = ("KUBE-FIREWALL", "KUBE-KUBELET-CANARY", "KUBE-IPTABLES-HINT")
CGROUP_ROOT = Path("/sys/fs/cgroup")
# Shim sockets: containerd v2 puts them here whatever its state folder.
SHIM_SOCKETS = Path("/run/containerd/s")
STOP_ORDER = ("kubelet", "coredns", "apiproxy", "minio", "containerd")


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a system command, capturing its output."""
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {result.returncode}: {result.stderr.strip()}")
    return result


def record_sysctls(state: Path) -> None:
    """Save the values kubelet will change, once (a crashed run's saved values win)."""
    saved = state / "sysctl.orig"
    if saved.exists():
        return
    lines = []
    for key in SYSCTLS:
        path = Path("/proc/sys") / key.replace(".", "/")
        if path.exists():
            lines.append(f"{key} = {path.read_text().strip()}")
    saved.write_text("\n".join(lines) + "\n")


def _restore_sysctls(state: Path) -> None:
    saved = state / "sysctl.orig"
    if not saved.exists():
        return
    for line in saved.read_text().splitlines():
        key, _, value = line.partition(" = ")
        path = Path("/proc/sys") / key.replace(".", "/")
        with contextlib.suppress(OSError):
            if path.read_text().strip() != value:
                path.write_text(value)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _kill(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _stop_recorded(state: Path, bins: Path) -> None:
    """Stop the node's processes recorded in pids/, if the pid still runs one of ours."""
    for name in STOP_ORDER:
        pidfile = state / "pids" / f"{name}.pid"
        if not pidfile.exists():
            continue
        pid = int(pidfile.read_text().strip() or 0)
        cmd = _cmdline(pid)
        if pid and (str(state) in cmd or str(bins) in cmd or "harness" in cmd):
            _kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 20
            while _cmdline(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            _kill(pid, signal.SIGKILL)
        pidfile.unlink(missing_ok=True)
        if name == "kubelet":
            _remove_sandboxes(state, bins)


def _remove_sandboxes(state: Path, bins: Path) -> None:
    """With kubelet gone and containerd up: stop and remove every pod sandbox (CNI DEL,
    unmounts), so nothing is left for the kernel to clean."""
    sock = state / "containerd.sock"
    if sock.exists() and (bins / "crictl").exists():
        run(
            str(bins / "crictl"),
            "-r",
            f"unix://{sock}",
            "--timeout",
            "60s",
            "rmp",
            "-fa",
            check=False,
        )


def _pids_in(cgroup: Path) -> set[int]:
    pids: set[int] = set()
    for procs_file in cgroup.rglob("cgroup.procs"):
        with contextlib.suppress(OSError, ValueError):
            pids.update(int(p) for p in procs_file.read_text().split())
    return pids


def _kill_pod_processes() -> None:
    """Anything still in the /kubepods cgroups (containers whose runtime is gone), and the
    shims of the node's containerd."""
    for _ in range(50):
        pids: set[int] = set()
        for hierarchy in CGROUP_ROOT.iterdir():
            if (hierarchy / "kubepods").is_dir():
                pids |= _pids_in(hierarchy / "kubepods")
        shims = {
            int(p.name)
            for p in Path("/proc").iterdir()
            if p.name.isdigit()
            and "containerd-shim-runc-v2" in _cmdline(int(p.name))
            and str(STATE_DIR) in _cmdline(int(p.name))
        }
        if not pids | shims:
            return
        for pid in pids | shims:
            _kill(pid, signal.SIGKILL)
        time.sleep(0.2)


def _unmount_under(*roots: Path) -> None:
    """Every mount below the roots, deepest first (lazily: a busy one goes when released)."""
    mounts = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mounts").read_text().splitlines():
            target = line.split()[1].replace("\\040", " ")
            if any(target == str(r) or target.startswith(f"{r}/") for r in roots):
                mounts.append(target)
    for target in sorted(set(mounts), key=len, reverse=True):
        run("umount", "-l", target, check=False)


def mounts_under(*roots: Path) -> list[str]:
    """Mount points below the roots (empty after a clean teardown)."""
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        target = line.split()[1]
        if any(target == str(r) or target.startswith(f"{r}/") for r in roots):
            found.append(target)
    return found


def _clean_netfilter() -> None:
    """The no-egress rule, and the chains (and jumps to them) kubelet adds."""
    while run("iptables", "-w", "-D", "FORWARD", *NO_EGRESS_RULE, check=False).returncode == 0:
        pass
    for tool in ("iptables", "ip6tables"):
        if shutil.which(tool) is None:
            continue
        for builtin in ("INPUT", "OUTPUT"):
            while (
                run(tool, "-w", "-D", builtin, "-j", "KUBE-FIREWALL", check=False).returncode == 0
            ):
                pass
        for table in ("filter", "nat", "mangle"):
            for chain in KUBELET_CHAINS:
                if run(tool, "-w", "-t", table, "-F", chain, check=False).returncode == 0:
                    run(tool, "-w", "-t", table, "-X", chain, check=False)


def _remove_cgroups() -> list[str]:
    """The /kubepods trees kubelet made in each hierarchy, leaves first."""
    left = []
    for hierarchy in CGROUP_ROOT.iterdir():
        top = hierarchy / "kubepods"
        if not top.is_dir():
            continue
        for path in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            with contextlib.suppress(OSError):
                path.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()
        if top.exists():
            left.append(str(top))
    return left


def _remove_fixed_paths(state: Path) -> None:
    """Paths kubelet, containerd and libcni use whatever folders they are configured with."""
    containers_log = Path("/var/log/containers")
    if containers_log.is_dir():
        for link in containers_log.iterdir():
            if link.is_symlink() and str(os.readlink(link)).startswith(str(state)):
                link.unlink()
    Path("/var/lib/kubelet/device-plugins/kubelet.sock").unlink(missing_ok=True)
    results = Path("/var/lib/cni/results")
    if results.is_dir():
        for f in results.glob("kubetune-test-*"):
            f.unlink(missing_ok=True)
        for f in results.glob("cni-loopback-*"):
            f.unlink(missing_ok=True)
    if SHIM_SOCKETS.is_dir():
        for sock in SHIM_SOCKETS.iterdir():
            if sock.is_socket():
                sock.unlink(missing_ok=True)
    for d in (
        containers_log,
        Path("/var/lib/kubelet/device-plugins"),
        Path("/var/lib/kubelet"),
        results,
        Path("/var/lib/cni"),
        SHIM_SOCKETS,
        Path("/run/containerd"),
    ):
        with contextlib.suppress(OSError):
            d.rmdir()


def clean_leftovers(bins: Path, state: Path = STATE_DIR) -> list[str]:
    """Undo whatever a node left; returns what is still there afterwards (empty when clean)."""
    from harness.node import IMAGE_STORE

    _stop_recorded(state, bins)
    _kill_pod_processes()
    _unmount_under(state, IMAGE_STORE)
    if Path(f"/sys/class/net/{network.BRIDGE}").exists():
        run("ip", "link", "del", network.BRIDGE, check=False)
    if shutil.which("iptables"):
        _clean_netfilter()
    left = _remove_cgroups()
    _restore_sysctls(state)
    _remove_fixed_paths(state)
    if not mounts_under(state):
        shutil.rmtree(state, ignore_errors=True)
    left += mounts_under(state, IMAGE_STORE)
    if Path(f"/sys/class/net/{network.BRIDGE}").exists():
        left.append(f"bridge {network.BRIDGE}")
    if state.exists():
        left.append(str(state))
    return left
