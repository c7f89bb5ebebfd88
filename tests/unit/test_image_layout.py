"""The OCI image layout of the test images: the build script keeps a few tags per repository and
the blobs they use, and the node is sent only the layers its store has not unpacked."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from harness import images

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def put(layout: Path, content: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(content).hexdigest()
    path = layout / "blobs" / "sha256" / digest.split(":")[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return digest


def push(layout: Path, ref: str, layer_contents: list[bytes]) -> dict[str, str]:
    """An image of uncompressed layers into the layout, as `buildah push -D oci:` writes it."""
    layers = [put(layout, c) for c in layer_contents]
    config = put(
        layout, json.dumps({"rootfs": {"type": "layers", "diff_ids": layers}, "ref": ref}).encode()
    )
    manifest = put(
        layout,
        json.dumps(
            {
                "schemaVersion": 2,
                "config": {"digest": config},
                "layers": [{"digest": d} for d in layers],
            }
        ).encode(),
    )
    index_path = layout / "index.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {"manifests": []}
    index["manifests"].append(
        {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest,
            "annotations": {"org.opencontainers.image.ref.name": ref},
        }
    )
    index_path.write_text(json.dumps(index))
    return {
        "manifest": manifest,
        "config": config,
        **{f"layer{i}": d for i, d in enumerate(layers)},
    }


def test_only_the_layers_the_store_has_not_unpacked_are_sent(tmp_path: Path) -> None:
    old = push(tmp_path, "localhost/t/trainer:test-old", [b"base", b"torch", b"code v1"])
    new = push(tmp_path, "localhost/t/trainer:test-new", [b"base", b"torch", b"code v2"])
    unpacked = images.chain_ids([old["layer0"], old["layer1"], old["layer2"]])

    layers = images.layers_to_send(tmp_path, "localhost/t/trainer:test-new", unpacked)
    assert layers == [new["layer2"]]
    # The same top layer over other lower layers is another snapshot: sent again.
    assert images.layers_to_send(tmp_path, "localhost/t/trainer:test-new", unpacked[:1]) == [
        new["layer1"],
        new["layer2"],
    ]

    out = io.BytesIO()
    images.write_oci_stream(tmp_path, "localhost/t/trainer:test-new", layers, out)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        names = tar.getnames()
        index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
    sent = {f"blobs/{d.replace(':', '/')}" for d in (new["manifest"], new["config"], new["layer2"])}
    assert set(names) == {"oci-layout", "index.json", *sent}
    (entry,) = index["manifests"]
    assert entry["digest"] == new["manifest"]
    assert entry["annotations"]["io.containerd.image.name"] == "localhost/t/trainer:test-new"


def test_prune_keeps_the_newest_tags_and_the_blobs_they_use(tmp_path: Path) -> None:
    pushed = [
        push(tmp_path, f"localhost/t/trainer:test-{i}", [b"base", f"code {i}".encode()])
        for i in range(4)
    ]
    operator = push(tmp_path, "localhost/t/operator:test-0", [b"base", b"op"])
    helper = [sys.executable, str(ROOT / "hack" / "oci-layout.py")]

    subprocess.run([*helper, "prune", str(tmp_path), "localhost/t/trainer:test-3", "2"], check=True)

    for i, expected in ((0, 1), (1, 1), (2, 0), (3, 0)):
        has = subprocess.run([*helper, "has", str(tmp_path), f"localhost/t/trainer:test-{i}"])
        assert has.returncode == expected, i
    assert (
        subprocess.run([*helper, "has", str(tmp_path), "localhost/t/operator:test-0"]).returncode
        == 0
    )
    blobs = {f"sha256:{p.name}" for p in (tmp_path / "blobs" / "sha256").iterdir()}
    assert pushed[0]["layer1"] not in blobs and pushed[1]["manifest"] not in blobs
    assert {pushed[3]["layer0"], pushed[2]["layer1"], operator["layer1"]} <= blobs
