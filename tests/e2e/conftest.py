"""A real node (kubelet + containerd + runc, CoreDNS, a private pod bridge) for the e2e tests.

Fixtures:
- test_images (session): the operator and CPU trainer images (harness.images), built by
  hack/build-images.sh or found in its cache.
- real_node (package): a Ready node registered with the `control_plane`, the images imported;
  gone before the k8s tests, whose pods must find no node.
  At the end everything it changed on the machine is undone, and the test fails if anything
  is left (processes, mounts, the bridge); its logs are kept when a test failed.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from harness.controlplane import ControlPlane
from harness.images import Image, build_test_images
from harness.node import Node, start_node


@pytest.fixture(scope="session")
def test_images() -> dict[str, Image]:
    """name ("operator", "trainer") -> Image."""
    return build_test_images()


@pytest.fixture(scope="package")
def real_node(
    control_plane: ControlPlane,
    test_images: dict[str, Image],
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Node]:
    """One Ready node running the built images."""
    node = start_node(control_plane)
    try:
        for image in test_images.values():
            node.import_image(image.source, image.ref)
    except BaseException:
        node.stop()
        raise
    try:
        yield node
    finally:
        logs = tmp_path_factory.getbasetemp() / "node-logs"
        shutil.copytree(node.log_dir, logs, dirs_exist_ok=True)
        shutil.copytree(node.pod_log_dir, logs / "pods", dirs_exist_ok=True, symlinks=True)
        left = node.stop()
        if request.session.testsfailed or left:
            print(f"node logs kept in {logs}")
        else:
            shutil.rmtree(logs, ignore_errors=True)
        assert not left, f"the node left behind: {left}"
