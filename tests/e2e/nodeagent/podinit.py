"""The first program of every container the node agent starts, run inside the pod's fresh
mount and UTS namespaces (``unshare --mount --uts --propagation private``).

It makes the pod's volumes, /etc/hosts and termination-log file appear at their absolute paths
with bind mounts visible only in this namespace, sets the pod hostname, then replaces itself
with the container's command. Standard library only: it runs before the "image" is in place.

A mount point that does not exist yet is created without touching the host: its nearest
existing ancestor under a system folder (/etc, /dev, /run, /var, ...) is covered by a private
overlay first; elsewhere the folder is created on the host and listed in `createdPathsFile` so
the agent removes it when it stops. Exit code 128 with the reason in the termination-log
file means the container could not be started.
"""

from __future__ import annotations

import ctypes
import json
import os
import socket
import sys
from pathlib import Path

MS_RDONLY = 1
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
START_ERROR_EXIT = 128
OVERLAY_ROOTS = ("/etc", "/dev", "/run", "/var", "/usr", "/opt", "/srv", "/mnt", "/media")

_libc = ctypes.CDLL("libc.so.6", use_errno=True)


def _mount(
    source: str | None, target: str, fstype: str | None, flags: int, data: str | None
) -> None:
    """mount(2), raising OSError naming the target on failure."""
    enc = [s.encode() if s is not None else None for s in (source, target, fstype, data)]
    if _libc.mount(enc[0], enc[1], enc[2], ctypes.c_ulong(flags), enc[3]) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} on {target}: {os.strerror(err)}")


def _first_missing(path: str) -> str | None:
    """The shallowest component of `path` that does not exist (None when it all exists)."""
    current = Path("/")
    for part in Path(path).parts[1:]:
        current = current / part
        if not os.path.lexists(current):
            return str(current)
        if current.is_symlink():
            current = Path(os.path.realpath(current))
    return None


def _overlay_root(missing: str) -> str | None:
    """The existing folder to cover with an overlay so `missing` can be made privately."""
    parent = os.path.realpath(os.path.dirname(missing))
    if any(parent == r or parent.startswith(r + "/") for r in OVERLAY_ROOTS):
        return parent
    return None


def _submounts(root: str) -> list[str]:
    """Mount points strictly below `root`, outermost first (from /proc/self/mountinfo)."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        if point.startswith(root.rstrip("/") + "/"):
            points.append(point)
    points.sort(key=lambda p: p.count("/"))
    outer: list[str] = []
    for p in points:
        if not any(p.startswith(o + "/") for o in outer):
            outer.append(p)
    return outer


def _overlay(root: str, work: Path) -> None:
    """Cover `root` with a copy-on-write overlay kept in `work`, keeping its submounts."""
    work.mkdir(parents=True, exist_ok=True)
    n = len(list(work.iterdir()))
    upper, wdir, stash = work / f"{n}-upper", work / f"{n}-work", work / f"{n}-orig"
    for d in (upper, wdir, stash):
        d.mkdir()
    subs = _submounts(root)
    _mount(root, str(stash), None, MS_BIND | MS_REC, None)
    _mount("overlay", root, "overlay", 0, f"lowerdir={root},upperdir={upper},workdir={wdir}")
    for sub in subs:
        _mount(str(stash) + sub[len(root) :], sub, None, MS_BIND | MS_REC, None)


def _make_points(paths: list[tuple[str, bool]], work: Path, created_file: Path) -> None:
    """Create every missing mount point (folder, or empty file when `is_file`)."""
    covered: list[str] = []
    for path, _ in paths:
        missing = _first_missing(path)
        if missing is None:
            continue
        root = _overlay_root(missing)
        if root is not None and not any(root == c or root.startswith(c + "/") for c in covered):
            _overlay(root, work)
            covered.append(root)
        elif root is None:
            with created_file.open("a") as f:
                f.write(missing + "\n")
    for path, is_file in paths:
        if os.path.lexists(path):
            continue
        if is_file:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).touch()
        else:
            Path(path).mkdir(parents=True, exist_ok=True)


def _covered(path: str, targets: list[str]) -> bool:
    """True when a mount at one of `targets` would hide `path`."""
    return any(path == t or path.startswith(t.rstrip("/") + "/") for t in targets)


def _hold_image_paths(paths: list[str], targets: list[str]) -> dict[str, int]:
    """O_PATH handles on the image folders that a volume is about to cover."""
    return {
        p: os.open(p, os.O_PATH | os.O_DIRECTORY)
        for p in paths
        if os.path.isdir(p) and _covered(p, targets)
    }


def _restore_image_paths(held: dict[str, int]) -> None:
    """Bind each held image folder back over the volume that covered it."""
    for path, fd in sorted(held.items(), key=lambda kv: kv[0].count("/")):
        Path(path).mkdir(parents=True, exist_ok=True)
        _mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC, None)
        os.close(fd)


def setup(spec: dict) -> None:
    """Mount everything the spec lists, set the hostname, enter the working directory."""
    mounts = sorted(spec["mounts"], key=lambda m: m["target"].count("/"))
    points = [(m["target"], os.path.isfile(m["source"])) for m in mounts]
    if spec.get("cwd"):
        points.append((spec["cwd"], False))
    _make_points(points, Path(spec["overlayDir"]), Path(spec["createdPathsFile"]))
    image = _hold_image_paths(spec.get("imagePaths") or [], [m["target"] for m in mounts])
    # Handles first: a volume mounted over /tmp must not hide the sources of the next ones.
    sources = [os.open(m["source"], os.O_PATH) for m in mounts]
    for m, fd in zip(mounts, sources, strict=True):
        _mount(f"/proc/self/fd/{fd}", m["target"], None, MS_BIND | MS_REC, None)
        if m.get("readOnly"):
            _mount(None, m["target"], None, MS_REMOUNT | MS_BIND | MS_RDONLY, None)
        os.close(fd)
    _restore_image_paths(image)
    socket.sethostname(spec["hostname"])
    if spec.get("cwd"):
        os.chdir(spec["cwd"])


def _fail(spec: dict, message: str) -> None:
    """Record why the container could not start and exit with the start-error code."""
    Path(spec["startErrorFile"]).write_text(message)
    print(f"node agent: {message}", file=sys.stderr, flush=True)
    os._exit(START_ERROR_EXIT)


def main() -> None:
    """podinit SPEC.json: set up the namespace, then exec the container command."""
    spec = json.loads(Path(sys.argv[1]).read_text())
    try:
        setup(spec)
    except Exception as err:
        _fail(spec, f"setting up the pod's mounts failed: {err}")
    argv, env = spec["argv"], spec["env"]
    if spec.get("cgroupProcs"):  # memory limit: join the container's memory cgroup
        Path(spec["cgroupProcs"]).write_text(str(os.getpid()))
    if not argv:
        _fail(spec, "the container has no command (the image is ignored, so command is required)")
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as err:
        _fail(spec, f"exec {argv[0]!r} failed: {err}")


if __name__ == "__main__":
    main()
