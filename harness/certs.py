"""Certificates for a throwaway control plane: a CA, the apiserver's serving cert, an admin
client cert, the apiserver's client cert for kubelets and the service-account signing key pair,
all written as PEM files. A node signs its own certificates with the same CA (`issue`)."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from harness import network

VALIDITY = datetime.timedelta(days=2)


@dataclass(frozen=True)
class CertFiles:
    """Paths of every PEM file the control plane reads."""

    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    sa_public: Path
    sa_private: Path
    kubelet_client_cert: Path
    kubelet_client_key: Path


def _new_key() -> ec.EllipticCurvePrivateKey:
    """A fresh P-256 key: fast to generate, accepted by every Kubernetes component."""
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    """PKCS#8 PEM without a passphrase."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    """A subject with a CN and, for client certs, an O (Kubernetes reads it as the group)."""
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attrs)


def _builder(subject: x509.Name, issuer: x509.Name, public_key: object) -> x509.CertificateBuilder:
    """A certificate builder valid from a minute ago (clock skew) for VALIDITY."""
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + VALIDITY)
    )


def make_ca() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed CA that signs every other cert of this control plane."""
    key = _new_key()
    name = _name("kubetune-test-ca")
    cert = (
        _builder(name, name, key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return cert, key


def issue(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    common_name: str,
    *,
    organization: str | None = None,
    server: bool = False,
    dns_names: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A leaf cert signed by the CA: a serving cert for 127.0.0.1/localhost (and the extra
    names and addresses given), or a client cert."""
    key = _new_key()
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = _builder(_name(common_name, organization), ca_cert.subject, key.public_key())
    builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    builder = builder.add_extension(
        x509.BasicConstraints(ca=False, path_length=None), critical=True
    )
    if server:
        sans: list[x509.GeneralName] = [
            *(x509.DNSName(d) for d in ("localhost", *dns_names)),
            *(x509.IPAddress(ipaddress.ip_address(i)) for i in ("127.0.0.1", *ips)),
        ]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def _write(path: Path, data: bytes) -> Path:
    """Write a PEM file readable only by its owner."""
    path.write_bytes(data)
    path.chmod(0o600)
    return path


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def write_pair(
    directory: Path, name: str, pair: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]
) -> tuple[Path, Path]:
    """Write <name>.crt and <name>.key; returns both paths."""
    cert, key = pair
    return _write(directory / f"{name}.crt", _cert_pem(cert)), _write(
        directory / f"{name}.key", _key_pem(key)
    )


def load_ca(files: CertFiles) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The CA certificate and key back from their files (a node signs its certs with them)."""
    cert = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return cert, key


def write_all(directory: Path) -> CertFiles:
    """Generate every certificate and key the control plane needs into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = make_ca()
    # In-cluster clients (pods of a real node) reach the apiserver as the `kubernetes` Service.
    serving_cert, serving_key = issue(
        ca_cert,
        ca_key,
        "kube-apiserver",
        server=True,
        dns_names=network.API_SERVICE_NAMES,
        ips=(network.API_SERVICE_IP,),
    )
    admin_cert, admin_key = issue(ca_cert, ca_key, "kubetune-admin", organization="system:masters")
    kubelet_client = issue(
        ca_cert, ca_key, "kube-apiserver-kubelet-client", organization="system:masters"
    )
    kubelet_client_cert, kubelet_client_key = write_pair(
        directory, "apiserver-kubelet-client", kubelet_client
    )
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sa_public = sa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return CertFiles(
        ca_cert=_write(directory / "ca.crt", _cert_pem(ca_cert)),
        ca_key=_write(directory / "ca.key", _key_pem(ca_key)),
        serving_cert=_write(directory / "apiserver.crt", _cert_pem(serving_cert)),
        serving_key=_write(directory / "apiserver.key", _key_pem(serving_key)),
        admin_cert=_write(directory / "admin.crt", _cert_pem(admin_cert)),
        admin_key=_write(directory / "admin.key", _key_pem(admin_key)),
        sa_public=_write(directory / "sa.pub", sa_public),
        sa_private=_write(directory / "sa.key", _key_pem(sa_key)),
        kubelet_client_cert=kubelet_client_cert,
        kubelet_client_key=kubelet_client_key,
    )


def write_serving_pair(ca: CertFiles, directory: Path, common_name: str) -> tuple[Path, Path]:
    """A serving cert for 127.0.0.1/localhost signed by the control plane's CA, written as
    tls.crt and tls.key in `directory` (the layout controller-runtime webhook servers read), so
    the apiserver can call a webhook served by a host process; the CA file is its caBundle."""
    ca_cert = x509.load_pem_x509_certificate(ca.ca_cert.read_bytes())
    ca_key = serialization.load_pem_private_key(ca.ca_key.read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise TypeError(f"{ca.ca_key} is not the EC key this module writes")
    cert, key = issue(ca_cert, ca_key, common_name, server=True)
    directory.mkdir(parents=True, exist_ok=True)
    return (
        _write(directory / "tls.crt", _cert_pem(cert)),
        _write(directory / "tls.key", _key_pem(key)),
    )
