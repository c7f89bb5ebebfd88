"""Stage torch for the CPU trainer image (trainer/Dockerfile, target `cpu`) into a folder of the
build context, from the project environment that runs the tests.

PyPI's torch for Linux is the CUDA build: with its CUDA wheels about 5 GB. The CPU image needs
the same torch binaries, but only the CUDA libraries they load at import (the ELF dependency
closure of torch._C; cuDNN's engines, cuSOLVER, triton and the rest are loaded only on a GPU,
if ever). So this copies (hard-links, on one filesystem) torch's own files and that closure,
and rewrites torch's metadata to require nothing it does not carry, so that pip in the image
does not fetch the CUDA wheels back. Usage: python hack/stage-torch-cpu.py DEST.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

DROPPED_REQUIREMENTS = re.compile(r"^Requires-Dist: (nvidia-|cuda-|triton)", re.I)


def needed(lib: Path) -> list[str]:
    """The sonames an ELF file lists as NEEDED."""
    out = subprocess.run(["readelf", "-d", str(lib)], capture_output=True, text=True, check=True)
    return re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", out.stdout)


def library_closure(start: Path, candidates: dict[str, Path]) -> set[Path]:
    """Every library of `candidates` (soname -> path) that `start` loads, transitively."""
    seen: set[Path] = set()
    todo = [start]
    while todo:
        for soname in needed(todo.pop()):
            path = candidates.get(soname)
            if path is not None and path not in seen:
                seen.add(path)
                todo.append(path)
    return seen


def place(src: Path, dest: Path) -> None:
    """Hard-link src to dest (a copy across filesystems)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        shutil.copy2(src, dest)


def stage(dest: Path) -> None:
    dist = md.distribution("torch")
    site = Path(str(dist.locate_file("")))
    stamp = dest / ".staged"
    wanted = f"torch {dist.version} from {site}\n"
    if stamp.exists() and stamp.read_text() == wanted:
        return
    shutil.rmtree(dest, ignore_errors=True)
    files = [Path(str(f)) for f in dist.files or [] if not str(f).startswith("..")]
    for rel in files:
        if (site / rel).is_file():
            place(site / rel, dest / rel)
    nvidia = {p.name: p for p in (site / "nvidia").rglob("*.so*") if p.is_file()}
    torch_libs = {p.name: p for p in (site / "torch" / "lib").glob("*.so*")}
    extension = next((site / "torch").glob("_C.*.so"))
    for lib in sorted(library_closure(extension, {**nvidia, **torch_libs})):
        if lib.name in nvidia:
            place(lib, dest / lib.relative_to(site))
    meta = next(dest.glob("torch-*.dist-info")) / "METADATA"
    text = meta.read_text()
    meta.unlink()  # a hard link: never edit the environment's own file
    meta.write_text(
        "".join(line for line in text.splitlines(True) if not DROPPED_REQUIREMENTS.match(line))
    )
    stamp.write_text(wanted)


if __name__ == "__main__":
    stage(Path(sys.argv[1]))
