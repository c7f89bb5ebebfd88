"""Running the real helm binary against charts/kubetune, for the chart tests."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.binaries import REPO_ROOT, bin_dir

CHART = REPO_ROOT / "charts" / "kubetune"
VALUES_EXAMPLES = sorted((CHART / "values-examples").glob("*.yaml"))
KUBE_VERSION = "1.34.4"


def helm_path() -> Path:
    """The helm built next to the control-plane binaries; skip the test where it is missing."""
    path = bin_dir() / "helm"
    if not os.access(path, os.X_OK):
        pytest.skip(f"no helm binary at {path} (run `make control-plane`)")
    return path


def helm_env(tmp: Path) -> dict[str, str]:
    """An environment where helm reads no user config and no ambient kubeconfig."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HELM_", "KUBECONFIG"))}
    for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        env[var] = str(tmp / var.lower())
    env["KUBECONFIG"] = str(tmp / "no-kubeconfig")
    return env


def run_helm(args: list[str], tmp: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run helm with `args`; raise with its output when `check` and it fails."""
    out = subprocess.run(
        [str(helm_path()), *args], capture_output=True, text=True, env=helm_env(tmp), timeout=60
    )
    if check and out.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
    return out


def template_args(
    values: list[Path], namespace: str = "kubetune", release: str = "kt"
) -> list[str]:
    """`helm template` arguments for the chart with the given values files."""
    args = [
        "template",
        release,
        str(CHART),
        "--namespace",
        namespace,
        "--kube-version",
        KUBE_VERSION,
    ]
    for v in values:
        args += ["--values", str(v)]
    return args


def render(tmp: Path, values: list[Path], **kw: str) -> list[dict[str, Any]]:
    """The chart's manifests (templates only, not crds/) as parsed YAML documents."""
    text = run_helm(template_args(values, **kw), tmp).stdout
    return [d for d in yaml.safe_load_all(text) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The documents of one kind."""
    return [d for d in docs if d.get("kind") == kind]
