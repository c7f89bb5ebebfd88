"""The OCI image layout that caches the test images (hack/build-images.sh --test).

One layout holds every test image: `buildah push` writes only the blobs it lacks, so images that
share their lower layers (the base, torch, the dependencies) share those blobs, and a code change
adds its small top layer only. The test node imports from it (harness/images.py).

  python hack/oci-layout.py has LAYOUT REF          exit 0 when REF is in the layout
  python hack/oci-layout.py prune LAYOUT REF KEEP   keep the KEEP newest tags of REF's
                                                    repository, drop older ones and every blob
                                                    no kept image uses
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

REF_NAME = "org.opencontainers.image.ref.name"


def index(layout: Path) -> dict[str, Any]:
    path = layout / "index.json"
    return json.loads(path.read_text()) if path.exists() else {"manifests": []}


def ref_of(descriptor: dict[str, Any]) -> str:
    return str((descriptor.get("annotations") or {}).get(REF_NAME, ""))


def repository(ref: str) -> str:
    """localhost/kubetune/trainer:test-abc -> localhost/kubetune/trainer."""
    return ref.rsplit(":", 1)[0] if ":" in ref.rsplit("/", 1)[-1] else ref


def blob(layout: Path, digest: str) -> Path:
    algorithm, hexa = digest.split(":", 1)
    return layout / "blobs" / algorithm / hexa


def has(layout: Path, ref: str) -> bool:
    """The image is in the layout with every blob it names."""
    for m in index(layout)["manifests"]:
        if ref_of(m) == ref:
            return all(blob(layout, d).is_file() for d in digests(layout, m["digest"]))
    return False


def digests(layout: Path, manifest_digest: str) -> list[str]:
    """The manifest's own digest, its config's and its layers'."""
    manifest = json.loads(blob(layout, manifest_digest).read_text())
    return [
        manifest_digest,
        manifest["config"]["digest"],
        *(x["digest"] for x in manifest["layers"]),
    ]


def prune(layout: Path, ref: str, keep: int) -> list[str]:
    """Drop all but the `keep` newest tags of ref's repository (the index lists them oldest
    first), then the blobs nothing kept uses; returns the tags dropped."""
    idx = index(layout)
    repo = repository(ref)
    same = [m for m in idx["manifests"] if repository(ref_of(m)) == repo]
    dropped = same[: max(0, len(same) - keep)]
    idx["manifests"] = [m for m in idx["manifests"] if m not in dropped]
    tmp = layout / "index.json.tmp"
    tmp.write_text(json.dumps(idx))
    tmp.replace(layout / "index.json")
    used = {d for m in idx["manifests"] for d in digests(layout, m["digest"])}
    for path in (layout / "blobs").glob("*/*"):
        if f"{path.parent.name}:{path.name}" not in used:
            path.unlink()
    return [ref_of(m) for m in dropped]


def main(argv: list[str]) -> int:
    command, layout, ref = argv[0], Path(argv[1]), argv[2]
    if command == "has":
        return 0 if has(layout, ref) else 1
    if command == "prune":
        for gone in prune(layout, ref, int(argv[3])):
            print(f"[oci-layout] dropped {gone}", file=sys.stderr)
        return 0
    raise SystemExit(__doc__)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
