"""The images the e2e tests run on their real node: the operator and the CPU trainer image, built
by hack/build-images.sh (cached as archives keyed by their inputs), and the pods' sandbox image,
written here as a one-file archive."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from tests.harness.binaries import REPO_ROOT

BUILD_SCRIPT = REPO_ROOT / "hack" / "build-images.sh"


@dataclass(frozen=True)
class Image:
    """A built image: its reference and the docker archive that holds it."""

    name: str
    ref: str
    archive: Path


def build_test_images(timeout: float = 3600) -> dict[str, Image]:
    """Build (or find cached) the operator and CPU trainer images; name -> Image."""
    out = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--test", "all"],
        check=True,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO_ROOT,
    )
    images = {}
    for line in out.stdout.splitlines():
        name, ref, archive = line.split()
        images[name] = Image(name, ref, Path(archive))
    return images


def _tar_bytes(files: dict[str, tuple[bytes, int]]) -> bytes:
    """An uncompressed tar of path -> (content, mode), owned by root, fixed timestamps."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, (content, mode) in files.items():
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(content), mode, 0
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def single_binary_archive(binary: Path, path: str, ref: str, out: Path, user: str) -> Path:
    """A docker archive of a one-layer image holding only `binary` at `path`, its entrypoint."""
    layer = _tar_bytes({path.lstrip("/"): (binary.read_bytes(), 0o755)})
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": [path], "User": user},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }
    ).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps(
        [{"Config": config_name, "RepoTags": [ref], "Layers": ["layer.tar"]}]
    ).encode()
    out.write_bytes(
        _tar_bytes(
            {
                "layer.tar": (layer, 0o644),
                config_name: (config, 0o644),
                "manifest.json": (manifest, 0o644),
            }
        )
    )
    return out
