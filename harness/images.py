"""The images the e2e tests run on their real node: the operator and the CPU trainer image, built
by hack/build-images.sh (cached in an OCI image layout, tagged by a hash of their inputs), and
the pods' sandbox image, written here as a one-file archive.

The node imports an image from the layout as a tar stream that leaves out the layers its store
has already unpacked (containerd skips a layer whose snapshot exists without reading it): after a
code change only the image's small top layer travels, not torch and the dependencies again."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from harness.binaries import REPO_ROOT

BUILD_SCRIPT = REPO_ROOT / "hack" / "build-images.sh"


@dataclass(frozen=True)
class Image:
    """A built image: its reference and where it is, an OCI image layout folder holding it or
    a docker archive (a file)."""

    name: str
    ref: str
    source: Path


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
        name, ref, source = line.split()
        images[name] = Image(name, ref, Path(source))
    return images


def _blob(layout: Path, digest: str) -> Path:
    algorithm, hexa = digest.split(":", 1)
    return layout / "blobs" / algorithm / hexa


def chain_ids(diff_ids: list[str]) -> list[str]:
    """The OCI chain IDs of a stack of layers (how containerd names their unpacked snapshots):
    the first layer's diff ID, then sha256 of "<previous chain ID> <diff ID>"."""
    out: list[str] = []
    for diff_id in diff_ids:
        if out:
            diff_id = "sha256:" + hashlib.sha256(f"{out[-1]} {diff_id}".encode()).hexdigest()
        out.append(diff_id)
    return out


def layout_manifest(layout: Path, ref: str) -> dict[str, Any]:
    """The index entry of `ref` in an OCI image layout."""
    for m in json.loads((layout / "index.json").read_text())["manifests"]:
        if (m.get("annotations") or {}).get("org.opencontainers.image.ref.name") == ref:
            return dict(m)
    raise LookupError(f"{ref} is not in {layout}")


def layers_to_send(layout: Path, ref: str, unpacked: Iterable[str]) -> list[str]:
    """The layer blobs of `ref` a store lacks, given the chain IDs it has unpacked."""
    entry = layout_manifest(layout, ref)
    manifest = json.loads(_blob(layout, entry["digest"]).read_text())
    config = json.loads(_blob(layout, manifest["config"]["digest"]).read_text())
    diff_ids = config["rootfs"]["diff_ids"]
    layers = [x["digest"] for x in manifest["layers"]]
    if len(diff_ids) != len(layers):
        raise ValueError(f"{ref}: {len(layers)} layers but {len(diff_ids)} diff IDs")
    have = set(unpacked)
    return [
        layer for layer, chain in zip(layers, chain_ids(diff_ids), strict=True) if chain not in have
    ]


def write_oci_stream(layout: Path, ref: str, layers: list[str], out: IO[bytes]) -> None:
    """An OCI archive of `ref` with only `layers` of its layer blobs, named `ref` for
    containerd (the io.containerd.image.name annotation)."""
    entry = layout_manifest(layout, ref)
    manifest = json.loads(_blob(layout, entry["digest"]).read_text())
    annotations = {"io.containerd.image.name": ref, "org.opencontainers.image.ref.name": ref}
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{**entry, "annotations": annotations}],
    }
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for name, content in (
            ("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode()),
            ("index.json", json.dumps(index).encode()),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
        for digest in [entry["digest"], manifest["config"]["digest"], *layers]:
            path = _blob(layout, digest)
            tar.add(str(path), arcname=f"blobs/{digest.replace(':', '/')}", recursive=False)


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
