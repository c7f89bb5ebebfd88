"""Kueue's manager as a host process against the test apiserver.

Its CRDs and webhook configurations come from the released module the binary was built from
(hack/build-schedulers.sh), as Kueue's own kustomization assembles them: the conversion webhooks
of the CRDs its patches name, and the admission webhooks of Kueue's API group. Each points at
https://127.0.0.1:PORT/<path> with a serving certificate from the control plane's CA instead
of an in-cluster Service. The job-framework webhooks (pods, Jobs, Deployments, ...) are left
out: kubetune uses the Workload API, and no other test's pods should pass through Kueue.

Kueue reads its metrics serving certificate from the fixed path /etc/kueue/metrics/certs when
it does not generate its certificates itself (which would name an in-cluster Service, not
127.0.0.1). The manager therefore runs in a private mount namespace whose /etc is the host's
with that folder overlaid: nothing changes on the host, and the overlay goes with the process.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness import binaries, certs, procs
from harness.controlplane import ControlPlane, http_get, log_tail, wait_established
from harness.wait import eventually

GROUP = "kueue.x-k8s.io"
NAMESPACE = "kueue-system"
# kubetune's FineTuneJob as an external framework: Kueue leaves pods that a FineTuneJob owns
# to kubetune even where it manages pods without a queue name.
EXTERNAL_FRAMEWORK = "FineTuneJob.v1alpha1.kubetune.dev"
WEBHOOK_CONFIG_NAMES = {
    "MutatingWebhookConfiguration": "kubetune-test-kueue-mutating",
    "ValidatingWebhookConfiguration": "kubetune-test-kueue-validating",
}


@dataclass
class Kueue:
    """A running Kueue manager."""

    process: subprocess.Popen[bytes]
    log: Path
    module: Path
    webhook_url: str
    health_port: int

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log, lines)

    def stop(self) -> None:
        procs.stop(self.process)


def _components(module: Path) -> Path:
    return module / "config" / "components"


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def converted_crds(module: Path) -> list[str]:
    """CRD names whose conversion webhook Kueue's CRD kustomization enables (its patches)."""
    crd_dir = _components(module) / "crd"
    kustomization = yaml.safe_load((crd_dir / "kustomization.yaml").read_text())
    names = []
    for patch in kustomization.get("patches") or []:
        doc = yaml.safe_load((crd_dir / patch["path"]).read_text())
        if (doc.get("spec") or {}).get("conversion"):
            names.append(doc["metadata"]["name"])
    return names


def crd_documents(module: Path, webhook_url: str, ca_bundle: str) -> list[dict[str, Any]]:
    """Kueue's CRDs, with conversion through the webhook where Kueue's patches ask for it."""
    converted = set(converted_crds(module))
    docs = []
    for path in sorted((_components(module) / "crd" / "bases").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        if doc["metadata"]["name"] in converted:
            doc["spec"]["conversion"] = {
                "strategy": "Webhook",
                "webhook": {
                    "clientConfig": {"url": f"{webhook_url}/convert", "caBundle": ca_bundle},
                    "conversionReviewVersions": ["v1"],
                },
            }
        docs.append(doc)
    return docs


def _own_group(webhook: dict[str, Any]) -> bool:
    """True when every rule of the webhook is about Kueue's own API group."""
    return all(rule.get("apiGroups") == [GROUP] for rule in webhook.get("rules") or [])


def webhook_configurations(module: Path, webhook_url: str, ca_bundle: str) -> list[dict[str, Any]]:
    """Kueue's admission webhooks for its own API group, served at `webhook_url`."""
    path = _components(module) / "webhook" / "manifests.yaml"
    out = []
    for doc in yaml.safe_load_all(path.read_text()):
        hooks = []
        for hook in doc["webhooks"]:
            if not _own_group(hook):
                continue
            service = hook["clientConfig"]["service"]
            hook["clientConfig"] = {"url": f"{webhook_url}{service['path']}", "caBundle": ca_bundle}
            hooks.append(hook)
        doc["metadata"] = {"name": WEBHOOK_CONFIG_NAMES[doc["kind"]]}
        doc["webhooks"] = hooks
        out.append(doc)
    return out


def manager_config(
    webhook_port: int, health_port: int, cert_dir: Path, pods_ready_timeout: str | None = None
) -> dict[str, Any]:
    """Kueue's Configuration for a host process: loopback only, no leader election, no metrics
    or visibility server, certificates from the harness instead of its own rotator."""
    config: dict[str, Any] = {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        "namespace": NAMESPACE,
        "health": {"healthProbeBindAddress": f"127.0.0.1:{health_port}"},
        "metrics": {"bindAddress": "0"},
        "webhook": {"port": webhook_port, "host": "127.0.0.1", "certDir": str(cert_dir)},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "integrations": {"frameworks": ["batch/job"], "externalFrameworks": [EXTERNAL_FRAMEWORK]},
        "featureGates": {"VisibilityOnDemand": False},
    }
    if pods_ready_timeout:
        config["waitForPodsReady"] = {"timeout": pods_ready_timeout, "blockAdmission": False}
    return config


METRICS_CERT_DIR = "kueue/metrics/certs"  # under /etc, where Kueue reads it


def in_private_etc(argv: list[str], overlay: Path, cert: Path, key: Path) -> list[str]:
    """`argv` run in its own mount namespace whose /etc has Kueue's metrics cert folder laid
    over the host's (an overlay: the host's /etc is read, never written)."""
    upper, work = overlay / "upper", overlay / "work"
    certs_dir = upper / METRICS_CERT_DIR
    certs_dir.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    (certs_dir / "tls.crt").write_bytes(cert.read_bytes())
    (certs_dir / "tls.key").write_bytes(key.read_bytes())
    mount = f"mount -t overlay overlay -o lowerdir=/etc,upperdir={upper},workdir={work} /etc"
    userns = [] if os.geteuid() == 0 else ["--map-root-user"]
    return [
        "unshare", *userns, "--mount", "--propagation", "private",
        "sh", "-c", f'{mount} && exec "$0" "$@"', *argv,
    ]  # fmt: skip


def _apply(cp: ControlPlane, docs: list[dict[str, Any]], path: Path) -> None:
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    cp.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path), timeout=120)


def install(cp: ControlPlane, module: Path, webhook_url: str, workdir: Path) -> None:
    """Kueue's CRDs (Established and served) and its webhook configurations."""
    ca_bundle = _b64(cp.cert_files.ca_cert)
    crds = crd_documents(module, webhook_url, ca_bundle)
    _apply(cp, crds, workdir / "kueue-crds.yaml")
    wait_established(cp, [d["metadata"]["name"] for d in crds])
    _apply(cp, webhook_configurations(module, webhook_url, ca_bundle), workdir / "webhooks.yaml")
    cp.kubectl("create", "namespace", NAMESPACE, check=False)


def uninstall_webhooks(cp: ControlPlane) -> None:
    """Remove the webhook configurations (they name a port nothing serves once Kueue stops)."""
    for kind, name in WEBHOOK_CONFIG_NAMES.items():
        cp.kubectl("delete", kind.lower(), name, "--ignore-not-found", check=False)


def start_kueue(
    cp: ControlPlane, workdir: Path, pods_ready_timeout: str | None = None, timeout: float = 120
) -> Kueue:
    """Install Kueue's API and start its manager; returns once its webhooks answer."""
    binary = binaries.ensure_component(cp.bin_dir, "kueue")
    module = binaries.module_dir("kueue")
    workdir.mkdir(parents=True, exist_ok=True)
    cert_dir = workdir / "certs"
    cert, key = certs.write_serving_pair(cp.cert_files, cert_dir, "kueue-webhook")
    webhook_port, health_port = procs.free_port(), procs.free_port()
    webhook_url = f"https://127.0.0.1:{webhook_port}"
    config = workdir / "kueue-config.yaml"
    config.write_text(
        yaml.safe_dump(manager_config(webhook_port, health_port, cert_dir, pods_ready_timeout))
    )
    install(cp, module, webhook_url, workdir)
    log = workdir / "kueue.log"
    argv = [str(binary), f"--config={config}", "--zap-log-level=3"]
    proc = procs.spawn(in_private_etc(argv, workdir / "etc", cert, key), log, cp.env())
    kueue = Kueue(proc, log, module, webhook_url, health_port)
    try:
        eventually(lambda: _ready(kueue), timeout, "Kueue /readyz", log)
        # The webhook server is up; wait until the apiserver reaches it (defaulting a flavor).
        eventually(lambda: _webhook_answers(cp, workdir), 60, "Kueue webhooks answering", log)
    except BaseException:
        kueue.stop()
        raise
    return kueue


def _ready(kueue: Kueue) -> bool:
    if not kueue.alive():
        raise AssertionError(f"Kueue exited with {kueue.process.returncode}:\n{kueue.log_tail()}")
    return http_get(f"http://127.0.0.1:{kueue.health_port}/readyz")[0] == 200


def _webhook_answers(cp: ControlPlane, workdir: Path) -> bool:
    """A server-side dry run of a ResourceFlavor goes through Kueue's mutating webhook."""
    probe = {
        "apiVersion": f"{GROUP}/v1beta2",
        "kind": "ResourceFlavor",
        "metadata": {"name": f"kubetune-webhook-probe-{int(time.time())}"},
    }
    path = workdir / "probe.json"
    path.write_text(json.dumps(probe))
    result = cp.kubectl("create", "--dry-run=server", "-f", str(path), check=False)
    return result.returncode == 0
