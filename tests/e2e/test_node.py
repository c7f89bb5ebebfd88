"""The real test node itself: a pod from a built image runs under the restricted
securityContext with a read-only root, reaches the API in-cluster with its ServiceAccount
token, resolves cluster names through CoreDNS and has no route off the machine."""

from __future__ import annotations

import json
import textwrap
import uuid

import pytest

from harness import eventually, network
from harness.controlplane import ControlPlane
from harness.images import Image
from harness.node import Node

pytestmark = [pytest.mark.e2e]

PROBE = textwrap.dedent(
    """
    import json, os, socket, ssl, urllib.request
    out = {"uid": os.getuid(), "gid": os.getgid()}
    try:
        open("/written-to-root", "w")
        out["root"] = "writable"
    except OSError as err:
        out["root"] = err.strerror
    out["kubernetes"] = socket.gethostbyname("kubernetes.default.svc.cluster.local")
    try:
        socket.gethostbyname("example.com")
        out["outside"] = "resolved"
    except socket.gaierror as err:
        out["outside"] = "not resolved"
    d = "/var/run/secrets/kubernetes.io/serviceaccount"
    host = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
    req = urllib.request.Request(
        "https://%s:%s/api/v1/namespaces/%s/pods/%s" % (*host, open(d + "/namespace").read(),
                                                       socket.gethostname()),
        headers={"Authorization": "Bearer " + open(d + "/token").read()})
    ctx = ssl.create_default_context(cafile=d + "/ca.crt")
    pod = json.load(urllib.request.urlopen(req, context=ctx, timeout=10))
    out["api"] = pod["metadata"]["name"]
    out["routes"] = [l.split()[1] for l in open("/proc/net/route").read().splitlines()[1:]]
    print(json.dumps(out))
    """
)


def test_pod_from_the_built_image_runs_restricted_and_in_cluster(
    control_plane: ControlPlane, real_node: Node, test_images: dict[str, Image], namespace: str
) -> None:
    name = f"probe-{uuid.uuid4().hex[:6]}"
    control_plane.kubectl(
        "create", "rolebinding", "probe-view", "--clusterrole=view",
        f"--serviceaccount={namespace}:default", "-n", namespace,
    )  # fmt: skip
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "probe",
                    "image": test_images["operator"].ref,
                    "imagePullPolicy": "Never",
                    "command": ["python3", "-c", PROBE],
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(pod))

    def phase() -> str | None:
        p = control_plane.kubectl(
            "get", "pod", name, "-n", namespace, "-o", "jsonpath={.status.phase}"
        ).stdout
        return p if p in ("Succeeded", "Failed") else None

    assert eventually(phase, 120, f"pod {name} finished") == "Succeeded", control_plane.kubectl(
        "logs", name, "-n", namespace, check=False
    ).stdout
    out = json.loads(control_plane.kubectl("logs", name, "-n", namespace).stdout)
    # The image's user (no runAsUser in the pod), a root the runtime made read-only.
    assert (out["uid"], out["gid"]) == (65532, 65532), out
    assert out["root"] == "Read-only file system", out
    assert out["kubernetes"] == network.API_SERVICE_IP, out
    assert out["outside"] == "not resolved", out
    assert out["api"] == name, out
    # Only the pod subnet and the service range: no default route off the bridge.
    assert "00000000" not in out["routes"], out
    node = control_plane.kubectl(
        "get", "pod", name, "-n", namespace, "-o", "jsonpath={.spec.nodeName}"
    ).stdout
    assert node == real_node.name
