"""Pure parts of the control-plane harness: certificates, kubeconfig, flags, ports."""

from __future__ import annotations

import ipaddress
import socket
import time
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from harness import certs, controlplane, kubeconfig, network, procs

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> certs.CertFiles:
    return certs.write_all(tmp_path_factory.mktemp("pki"))


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_serving_cert_is_for_loopback_and_the_kubernetes_service(pki: certs.CertFiles) -> None:
    ca, serving = load(pki.ca_cert), load(pki.serving_cert)
    serving.verify_directly_issued_by(ca)
    sans = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost", *network.API_SERVICE_NAMES]
    assert sans.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address(network.API_SERVICE_IP),
    ]
    usage = serving.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in usage


def test_admin_cert_is_in_system_masters(pki: certs.CertFiles) -> None:
    admin = load(pki.admin_cert)
    admin.verify_directly_issued_by(load(pki.ca_cert))
    orgs = [a.value for a in admin.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    assert orgs == ["system:masters"]
    usage = admin.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in usage


def test_key_files_are_private(pki: certs.CertFiles) -> None:
    for key in (pki.ca_key, pki.serving_key, pki.admin_key, pki.sa_private, pki.kubelet_client_key):
        assert key.stat().st_mode & 0o077 == 0, key


def test_kubeconfig_embeds_credentials_and_names_the_server(
    pki: certs.CertFiles, tmp_path: Path
) -> None:
    path = kubeconfig.write_cert_kubeconfig(
        tmp_path / "kc", "https://127.0.0.1:6443", pki.ca_cert, pki.admin_cert, pki.admin_key
    )
    data = yaml.safe_load(path.read_text())
    assert data["current-context"] == kubeconfig.CONTEXT
    assert data["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:6443"
    user = data["users"][0]["user"]
    assert set(user) == {"client-certificate-data", "client-key-data"}
    token = yaml.safe_load(
        kubeconfig.write_token_kubeconfig(
            tmp_path / "t", "https://127.0.0.1:1", pki.ca_cert, "abc"
        ).read_text()
    )
    assert token["users"][0]["user"] == {"token": "abc"}


def test_every_component_listens_on_loopback_only(pki: certs.CertFiles, tmp_path: Path) -> None:
    argv = [
        *controlplane.etcd_args(tmp_path, 1, 2),
        *controlplane.apiserver_args(pki, "http://127.0.0.1:1", 3, tmp_path),
        *controlplane.controller_manager_args(pki, tmp_path / "kc"),
        *controlplane.scheduler_args(tmp_path / "kc"),
    ]
    for flag in argv:
        if "://" in flag:
            assert "://127.0.0.1:" in flag or flag.startswith("--service-account-issuer="), flag
        if flag.startswith(("--bind-address=", "--advertise-address=")):
            assert flag.endswith("=127.0.0.1"), flag
    assert "--endpoint-reconciler-type=none" in argv and "--unsafe-no-fsync" in argv


def test_free_port_is_bindable() -> None:
    port = procs.free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_stop_kills_the_whole_process_group(tmp_path: Path) -> None:
    proc = procs.spawn(["sh", "-c", "sleep 60 & sleep 60"], tmp_path / "log")
    try:
        deadline = time.monotonic() + 10
        while len(procs.group_members(proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(procs.group_members(proc.pid)) >= 2  # the shell and its background child
    finally:
        procs.stop(proc, grace_seconds=5)
    assert not procs.group_alive(proc.pid)
    assert procs.group_members(proc.pid) == []
