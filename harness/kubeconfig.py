"""Kubeconfig files for the test control plane, with every credential embedded."""

from __future__ import annotations

import base64
from pathlib import Path

import yaml

CONTEXT = "kubetune-test"


def _b64(path: Path) -> str:
    """File contents as the base64 text a kubeconfig's *-data fields carry."""
    return base64.b64encode(path.read_bytes()).decode()


def kubeconfig_dict(server: str, ca_cert: Path, user: dict[str, str]) -> dict[str, object]:
    """A one-cluster, one-user kubeconfig whose current context is CONTEXT."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": CONTEXT,
                "cluster": {"server": server, "certificate-authority-data": _b64(ca_cert)},
            }
        ],
        "users": [{"name": CONTEXT, "user": user}],
        "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": CONTEXT}}],
        "current-context": CONTEXT,
        "preferences": {},
    }


def write_cert_kubeconfig(
    path: Path, server: str, ca_cert: Path, client_cert: Path, client_key: Path
) -> Path:
    """A kubeconfig that authenticates with a client certificate (the admin one)."""
    user = {"client-certificate-data": _b64(client_cert), "client-key-data": _b64(client_key)}
    return _write(path, kubeconfig_dict(server, ca_cert, user))


def write_token_kubeconfig(path: Path, server: str, ca_cert: Path, token: str) -> Path:
    """A kubeconfig that authenticates with a bearer token (a ServiceAccount's)."""
    return _write(path, kubeconfig_dict(server, ca_cert, {"token": token}))


def _write(path: Path, config: dict[str, object]) -> Path:
    """Write the kubeconfig readable only by its owner."""
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path
