"""A real control plane on 127.0.0.1: etcd, kube-apiserver, kube-controller-manager and
kube-scheduler as child processes, with generated certificates and an explicit kubeconfig.

Nothing here dials a non-loopback address: the apiserver advertises 127.0.0.1 and reconciles
no endpoints, and every client is handed the kubeconfig path explicitly.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import binaries, certs, kubeconfig, network, procs

LOOPBACK_NO_PROXY = "127.0.0.1,localhost"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
ADMIN_SA_NAMESPACE = "kube-system"
ADMIN_SA_NAME = "kubetune-test-admin"


class ControlPlaneError(RuntimeError):
    """The control plane did not come up; the message names the component and its log."""


class PortInUseError(ControlPlaneError):
    """A component could not bind its port: another process took it after it was chosen."""


PORT_ATTEMPTS = 3


class KubectlError(subprocess.CalledProcessError):
    """kubectl exited non-zero; str() carries its stderr so assertion output explains why."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstderr: {self.stderr}\nstdout: {self.output}"


@dataclass
class ControlPlane:
    """A running control plane and the ways tests talk to it."""

    base_dir: Path
    bin_dir: Path
    log_dir: Path
    server: str
    kubeconfig: Path
    cert_files: certs.CertFiles
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    version: dict[str, str] = field(default_factory=dict)
    startup_seconds: float = 0.0
    _admin_token: str | None = None

    @property
    def kubectl_bin(self) -> Path:
        """The kubectl binary the tests use."""
        return binaries.kubectl_path(self.bin_dir)

    @property
    def git_version(self) -> str:
        """The apiserver's version string, e.g. v1.34.4."""
        return self.version.get("gitVersion", "unknown")

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment for processes tests start: this kubeconfig, no proxy for loopback."""
        env = dict(os.environ if base is None else base)
        env.update(
            KUBECONFIG=str(self.kubeconfig),
            KUBECACHEDIR=str(self.kube_cache_dir),
            NO_PROXY=LOOPBACK_NO_PROXY,
            no_proxy=LOOPBACK_NO_PROXY,
        )
        return env

    @property
    def kube_cache_dir(self) -> Path:
        """kubectl's discovery/OpenAPI cache for this control plane (never ~/.kube/cache)."""
        return self.base_dir / "kube-cache"

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this control plane (explicit --kubeconfig), capturing text output."""
        argv = [
            str(self.kubectl_bin),
            f"--kubeconfig={self.kubeconfig}",
            f"--cache-dir={self.kube_cache_dir}",
            *args,
        ]
        result = subprocess.run(
            argv, input=input, capture_output=True, text=True, env=self.env(), timeout=timeout
        )
        if check and result.returncode != 0:
            raise KubectlError(result.returncode, argv, result.stdout, result.stderr)
        return result

    def service_account_token(self, namespace: str, name: str, seconds: int = 3600) -> str:
        """A bound token for ServiceAccount namespace/name (TokenRequest API); the SA must exist."""
        out = self.kubectl("create", "token", name, "-n", namespace, f"--duration={seconds}s")
        return out.stdout.strip()

    def kubeconfig_for_service_account(
        self, namespace: str, name: str, path: Path | None = None, seconds: int = 3600
    ) -> Path:
        """A kubeconfig file that acts as ServiceAccount namespace/name (for RBAC tests)."""
        token = self.service_account_token(namespace, name, seconds)
        target = path or self.base_dir / f"kubeconfig-sa-{namespace}-{name}"
        return kubeconfig.write_token_kubeconfig(
            target, self.server, self.cert_files.ca_cert, token
        )

    @property
    def admin_token(self) -> str:
        """A bearer token with cluster-admin rights (a ServiceAccount in kube-system)."""
        if self._admin_token is None:
            self.kubectl("create", "serviceaccount", ADMIN_SA_NAME, "-n", ADMIN_SA_NAMESPACE)
            self.kubectl(
                "create",
                "clusterrolebinding",
                ADMIN_SA_NAME,
                "--clusterrole=cluster-admin",
                f"--serviceaccount={ADMIN_SA_NAMESPACE}:{ADMIN_SA_NAME}",
            )
            self._admin_token = self.service_account_token(ADMIN_SA_NAMESPACE, ADMIN_SA_NAME, 86400)
        return self._admin_token

    def alive(self) -> dict[str, bool]:
        """Which components are still running."""
        return {name: p.poll() is None for name, p in self.processes.items()}

    def stop(self) -> None:
        """Stop every component, newest first, and their process groups."""
        for name in reversed(list(self.processes)):
            procs.stop(self.processes[name])

    def leftover_groups(self) -> list[str]:
        """Components whose process group still has a member (should be empty after stop)."""
        return [n for n, p in self.processes.items() if procs.group_alive(p.pid)]

    def remove_files(self, keep_logs: bool) -> None:
        """Delete etcd data and certificates; the logs too unless asked to keep them."""
        if keep_logs:
            for child in self.base_dir.iterdir():
                if child != self.log_dir:
                    _remove(child)
        else:
            _remove(self.base_dir)


def _remove(path: Path) -> None:
    """Delete a file or a folder tree, whichever it is."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def etcd_args(data_dir: Path, client_port: int, peer_port: int) -> list[str]:
    """etcd flags: one member on loopback, data in a temp dir, no fsync (tests only)."""
    client, peer = f"http://127.0.0.1:{client_port}", f"http://127.0.0.1:{peer_port}"
    return [
        "--name=kubetune-test",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=kubetune-test={peer}",
        "--unsafe-no-fsync",
        "--log-level=warn",
    ]


def apiserver_args(c: certs.CertFiles, etcd_url: str, port: int, cert_dir: Path) -> list[str]:
    """kube-apiserver flags: loopback only, client-cert + SA token auth, Node + RBAC
    authorization, and what a real node needs: the kubelet client cert (logs, exec) and
    node addresses by InternalIP (the bridge address of harness.node)."""
    return [
        f"--etcd-servers={etcd_url}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        "--endpoint-reconciler-type=none",
        f"--secure-port={port}",
        f"--cert-dir={cert_dir}",
        f"--tls-cert-file={c.serving_cert}",
        f"--tls-private-key-file={c.serving_key}",
        f"--client-ca-file={c.ca_cert}",
        f"--service-account-issuer={SA_ISSUER}",
        f"--service-account-key-file={c.sa_public}",
        f"--service-account-signing-key-file={c.sa_private}",
        f"--service-cluster-ip-range={network.SERVICE_CIDR}",
        "--authorization-mode=Node,RBAC",
        f"--kubelet-client-certificate={c.kubelet_client_cert}",
        f"--kubelet-client-key={c.kubelet_client_key}",
        f"--kubelet-certificate-authority={c.ca_cert}",
        "--kubelet-preferred-address-types=InternalIP",
        "--allow-privileged=true",
        "--profiling=false",
        "--v=1",
    ]


def controller_manager_args(c: certs.CertFiles, config: Path) -> list[str]:
    """kube-controller-manager flags: every default controller (GC, namespaces, Jobs,
    ServiceAccounts, node lifecycle, CSR signing with the test CA), no HTTPS endpoint."""
    return [
        f"--kubeconfig={config}",
        "--controllers=*",
        "--leader-elect=false",
        "--bind-address=127.0.0.1",
        "--secure-port=0",
        f"--service-account-private-key-file={c.sa_private}",
        f"--root-ca-file={c.ca_cert}",
        f"--cluster-signing-cert-file={c.ca_cert}",
        f"--cluster-signing-key-file={c.ca_key}",
        "--use-service-account-credentials=false",
        "--v=1",
    ]


def scheduler_args(config: Path) -> list[str]:
    """kube-scheduler flags: no leader election, no HTTPS endpoint."""
    return [
        f"--kubeconfig={config}",
        "--leader-elect=false",
        "--bind-address=127.0.0.1",
        "--secure-port=0",
        "--v=1",
    ]


def _no_proxy_opener(context: ssl.SSLContext | None = None) -> urllib.request.OpenerDirector:
    """A urllib opener that never uses a proxy (tests talk to loopback only)."""
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    return urllib.request.build_opener(*handlers)


def admin_ssl_context(c: certs.CertFiles) -> ssl.SSLContext:
    """TLS context that trusts the test CA and presents the admin client cert."""
    ctx = ssl.create_default_context(cafile=str(c.ca_cert))
    ctx.load_cert_chain(str(c.admin_cert), str(c.admin_key))
    return ctx


def http_get(
    url: str, context: ssl.SSLContext | None = None, timeout: float = 5
) -> tuple[int, str]:
    """GET a URL without proxies; (status, body), status 0 when nothing answered."""
    try:
        with _no_proxy_opener(context).open(url, timeout=timeout) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as err:
        return int(err.code), err.read().decode(errors="replace")
    except (urllib.error.URLError, OSError):
        return 0, ""


def wait_until(
    what: str,
    check: Callable[[], bool],
    cp: ControlPlane,
    timeout: float,
    watch: tuple[str, ...] = (),
) -> None:
    """Poll `check` until true; fail early, with the log path, if a watched component died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name in watch:
            if cp.processes[name].poll() is not None:
                log = cp.log_dir / f"{name}.log"
                tail = log_tail(log)
                error = PortInUseError if "address already in use" in tail else ControlPlaneError
                raise error(
                    f"{name} exited with {cp.processes[name].returncode} while waiting for "
                    f"{what}; log: {log}\n{tail}"
                )
        if check():
            return
        time.sleep(0.25)
    raise ControlPlaneError(
        f"timed out after {timeout:.0f}s waiting for {what}; logs in {cp.log_dir}"
    )


def wait_established(cp: ControlPlane, crds: list[str], timeout: float = 60) -> None:
    """Poll until each CRD (its name, or KIND/NAME as `kubectl get -o name` prints it) is
    Established. Not `kubectl wait`: that fails instead of waiting on a CRD the apiserver has
    not given a status yet."""
    jsonpath = '{.status.conditions[?(@.type=="Established")].status}'

    def established(name: str) -> bool:
        crd = f"crd/{name.split('/')[-1]}"
        out = cp.kubectl("get", crd, "-o", f"jsonpath={jsonpath}", check=False)
        return out.returncode == 0 and out.stdout.strip() == "True"

    deadline = time.monotonic() + timeout
    pending = list(crds)
    while pending:
        pending = [n for n in pending if not established(n)]
        if pending and time.monotonic() > deadline:
            raise ControlPlaneError(f"CRDs not Established after {timeout:.0f}s: {pending}")
        if pending:
            time.sleep(0.25)


def log_tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log file (for error messages)."""
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _default_service_account_exists(cp: ControlPlane) -> bool:
    """The controller manager is working once it has created default/default ServiceAccount."""
    status, _ = http_get(
        f"{cp.server}/api/v1/namespaces/default/serviceaccounts/default",
        admin_ssl_context(cp.cert_files),
    )
    return status == 200


def start_control_plane(
    bin_dir: Path | None = None, base_dir: Path | None = None, timeout: float = 180
) -> ControlPlane:
    """Start etcd, kube-apiserver, kube-controller-manager and kube-scheduler; return once the
    apiserver is ready and the controller manager has acted. Stops everything on failure, and
    starts over on fresh ports if another process took a port between choosing and binding."""
    started = time.monotonic()
    bins = binaries.ensure_built(bin_dir or binaries.bin_dir())
    base = base_dir or Path(tempfile.mkdtemp(prefix="kubetune-cp-"))
    for attempt in range(1, PORT_ATTEMPTS + 1):
        try:
            cp = _start_once(bins, base, timeout)
        except PortInUseError:
            if attempt == PORT_ATTEMPTS:
                raise
            _remove(base)
            continue
        cp.startup_seconds = time.monotonic() - started
        return cp
    raise AssertionError("unreachable")


def _start_once(bins: Path, base: Path, timeout: float) -> ControlPlane:
    """One start on freshly chosen ports, all files under `base`."""
    log_dir = base / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    cert_files = certs.write_all(base / "pki")
    api_port = procs.free_port()
    server = f"https://127.0.0.1:{api_port}"
    config = kubeconfig.write_cert_kubeconfig(
        base / "kubeconfig", server, cert_files.ca_cert, cert_files.admin_cert, cert_files.admin_key
    )
    cp = ControlPlane(
        base_dir=base,
        bin_dir=bins,
        log_dir=log_dir,
        server=server,
        kubeconfig=config,
        cert_files=cert_files,
    )
    try:
        _start_all(cp, cp.env(), api_port, timeout)
    except BaseException:
        cp.stop()
        raise
    return cp


def _start_all(cp: ControlPlane, env: dict[str, str], api_port: int, timeout: float) -> None:
    """Start the components in dependency order, each waiting for the one before."""
    etcd_port, peer_port = procs.free_port(), procs.free_port()
    etcd_url = f"http://127.0.0.1:{etcd_port}"

    def launch(name: str, args: list[str]) -> None:
        cp.processes[name] = procs.spawn(
            [str(cp.bin_dir / name), *args], cp.log_dir / f"{name}.log", env
        )

    launch("etcd", etcd_args(cp.base_dir / "etcd", etcd_port, peer_port))
    wait_until(
        "etcd /health", lambda: http_get(f"{etcd_url}/health")[0] == 200, cp, timeout, ("etcd",)
    )

    launch(
        "kube-apiserver",
        apiserver_args(cp.cert_files, etcd_url, api_port, cp.base_dir / "apiserver"),
    )
    ctx = admin_ssl_context(cp.cert_files)
    wait_until(
        "kube-apiserver /readyz",
        lambda: http_get(f"{cp.server}/readyz", ctx)[0] == 200,
        cp,
        timeout,
        ("etcd", "kube-apiserver"),
    )
    status, body = http_get(f"{cp.server}/version", ctx)
    if status != 200:
        raise ControlPlaneError(f"GET /version answered {status}: {body}")
    cp.version = _parse_version(body)

    launch("kube-controller-manager", controller_manager_args(cp.cert_files, cp.kubeconfig))
    launch("kube-scheduler", scheduler_args(cp.kubeconfig))
    wait_until(
        "kube-controller-manager to create the default ServiceAccount",
        lambda: _default_service_account_exists(cp),
        cp,
        timeout,
        tuple(cp.processes),
    )


def _parse_version(body: str) -> dict[str, str]:
    """The /version document as a dict of strings."""
    data: dict[str, Any] = json.loads(body)
    return {k: str(v) for k, v in data.items()}
