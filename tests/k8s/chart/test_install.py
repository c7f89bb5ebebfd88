"""`helm install` of charts/kubetune into the real test apiserver: objects exist, RBAC holds."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import ControlPlane
from tests.unit.chart.helm import CHART, helm_env, helm_path

pytestmark = pytest.mark.k8s


def helm(
    cp: ControlPlane, tmp: Path, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """helm against the test apiserver only (explicit --kubeconfig)."""
    env = {**cp.env(), **{k: v for k, v in helm_env(tmp).items() if k.startswith("HELM_")}}
    out = subprocess.run(
        [str(helm_path()), f"--kubeconfig={cp.kubeconfig}", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    if check and out.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
    return out


def helm_install(
    cp: ControlPlane, tmp: Path, release: str, namespace: str, *values: str
) -> subprocess.CompletedProcess[str]:
    """Install the chart as `release` into `namespace`; each of `values` is passed as --set."""
    sets = [arg for value in values for arg in ("--set", value)]
    return helm(cp, tmp, "install", release, str(CHART), "-n", namespace, *sets)


def can_i(cp: ControlPlane, sa: str, verb: str, resource: str, namespace: str) -> bool:
    """Whether ServiceAccount `sa` (ns:name) may do `verb` on `resource` (or resource/subresource)."""
    resource, _, sub = resource.partition("/")
    extra = [f"--subresource={sub}"] if sub else []
    out = cp.kubectl(
        "auth", "can-i", verb, resource, *extra, "-n", namespace,
        f"--as=system:serviceaccount:{sa}", check=False,
    )  # fmt: skip
    return out.stdout.strip() == "yes"


@pytest.fixture
def release(control_plane: ControlPlane, namespace: str, tmp_path: Path) -> Iterator[str]:
    """A unique release name; uninstalled after the test."""
    name = f"kt-{uuid.uuid4().hex[:6]}"
    yield name
    helm(control_plane, tmp_path, "uninstall", name, "-n", namespace, "--wait=false", check=False)


def test_install_creates_crds_rbac_deployment_service(
    control_plane: ControlPlane, namespace: str, release: str, tmp_path: Path
) -> None:
    cp = control_plane
    helm_install(cp, tmp_path, release, namespace, f"peering.name={release}")
    full = f"{release}-kubetune"
    for crd in (
        "finetunejobs.kubetune.dev",
        "finetunesweeps.kubetune.dev",
        "finetuneschedules.kubetune.dev",
        "clusterkopfpeerings.kopf.dev",
        "kopfpeerings.kopf.dev",
    ):
        cp.kubectl("wait", "--for=condition=Established", "--timeout=30s", f"crd/{crd}")
    cp.kubectl(
        "get", f"clusterrole/{full}", f"clusterrolebinding/{full}", f"clusterkopfpeering/{release}"
    )
    cp.kubectl(
        "get",
        "-n",
        namespace,
        f"serviceaccount/{full}",
        f"deployment/{full}",
        f"service/{full}-metrics",
        f"poddisruptionbudget/{full}",
    )
    ports = cp.kubectl(
        "get", "-n", namespace, f"service/{full}-metrics", "-o", "jsonpath={.spec.ports[0].port}"
    )
    assert ports.stdout == "8080"

    sa = f"{namespace}:{full}"
    other = "default"  # cluster-wide by default: any namespace
    for verb, resource in [
        ("watch", "finetunejobs.kubetune.dev"),
        ("patch", "finetunejobs.kubetune.dev/status"),
        ("update", "finetunejobs.kubetune.dev/finalizers"),
        ("create", "pods"),
        ("patch", "services"),
        ("delete", "finetunejobs.kubetune.dev"),
        ("create", "roles.rbac.authorization.k8s.io"),
        ("create", "events"),
        ("create", "finetunejobs.kubetune.dev"),
        ("watch", "finetunesweeps.kubetune.dev"),
        ("patch", "finetunesweeps.kubetune.dev/status"),
        ("watch", "finetuneschedules.kubetune.dev"),
        ("patch", "finetuneschedules.kubetune.dev/status"),
        ("update", "finetuneschedules.kubetune.dev/finalizers"),
    ]:
        assert can_i(cp, sa, verb, resource, other), f"{sa} cannot {verb} {resource}"
    for verb, resource in [
        ("get", "secrets"),
        ("patch", "pods"),
        ("patch", "finetunejobs.kubetune.dev"),
        ("update", "finetunejobs.kubetune.dev"),
        ("patch", "finetunesweeps.kubetune.dev"),
        ("delete", "finetuneschedules.kubetune.dev"),
        ("delete", "services"),
        ("list", "configmaps"),
        ("create", "clusterroles.rbac.authorization.k8s.io"),
        ("escalate", "roles.rbac.authorization.k8s.io"),
    ]:
        assert not can_i(cp, sa, verb, resource, other), (
            f"{sa} may {verb} {resource}: broader than needed"
        )

    helm(cp, tmp_path, "uninstall", release, "-n", namespace)
    assert cp.kubectl("get", "crd", "finetunejobs.kubetune.dev", check=False).returncode == 0, (
        "CRD removed on uninstall"
    )
    assert cp.kubectl("get", "clusterrole", full, check=False).returncode != 0


def test_namespaced_install_grants_only_listed_namespaces(
    control_plane: ControlPlane, namespace: str, release: str, tmp_path: Path
) -> None:
    cp = control_plane
    watched = f"{namespace}-w"
    cp.kubectl("create", "namespace", watched)
    try:
        scope = ("rbac.scope=namespaced", f"rbac.namespaces={{{watched}}}")
        helm_install(cp, tmp_path, release, namespace, *scope)
        full = f"{release}-kubetune"
        cp.kubectl(
            "get", "-n", watched, f"role/{full}", f"rolebinding/{full}", "kopfpeering/kubetune"
        )
        assert cp.kubectl("get", "clusterrole", full, check=False).returncode != 0
        sa = f"{namespace}:{full}"
        assert can_i(cp, sa, "create", "pods", watched)
        assert can_i(cp, sa, "patch", "finetunejobs.kubetune.dev/status", watched)
        assert can_i(cp, sa, "update", "finetunejobs.kubetune.dev/finalizers", watched)
        assert not can_i(cp, sa, "update", "finetunejobs.kubetune.dev/finalizers", "default")
        assert not can_i(cp, sa, "create", "pods", "default")
        assert not can_i(cp, sa, "list", "finetunejobs.kubetune.dev", "default")
    finally:
        cp.kubectl("delete", "namespace", watched, "--wait=false", check=False)
