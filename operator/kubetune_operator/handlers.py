"""Kopf handlers: thin, watch-driven. Every event only kicks the job's reconcile queue.

Run with `kopf run -m kubetune_operator.handlers` (add `--standalone`, or `--peering=NAME` for
several replicas: the status writes are guarded by resourceVersion either way). No finalizers:
deleting a job never waits for the operator, owner references clean up the children.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import kopf
from kubernetes import client, config

from kubetune_operator import decode, metrics
from kubetune_operator.api import constants as c
from kubetune_operator.apply import Writer
from kubetune_operator.changes import WorkerChanges
from kubetune_operator.controller import APPLY_WORKERS, Controller
from kubetune_operator.fetch import Reader, index_entry, job_entry, workload_entry
from kubetune_operator.kopf_settings import NoDiffBase, scan_cluster_only_when_cluster_wide
from kubetune_operator.queue import RECONCILE_WORKERS, JobQueue
from kubetune_operator.reconcile import workload as wl
from kubetune_operator.reconcile.plan import OperatorSettings

METRICS_PORT_ENV = "KUBETUNE_METRICS_PORT"

# Before Kopf reads anything: no object, however deep it nests, may end its watch streams.
decode.guard_kopf()


def api_client(connections: int = RECONCILE_WORKERS + APPLY_WORKERS) -> client.ApiClient:
    """Client from $KUBECONFIG when set (explicit file), else the in-cluster service account.

    The connection pool holds one keep-alive connection per thread that may call at once;
    the default (5 per CPU) would make the extra threads open a new TLS connection per call.
    """
    cfg = client.Configuration()
    path = os.environ.get("KUBECONFIG")
    if path:
        config.load_kube_config(config_file=path, client_configuration=cfg)
    else:
        config.load_incluster_config(client_configuration=cfg)
    cfg.connection_pool_maxsize = connections
    return client.ApiClient(cfg)


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """Same credentials as the client: $KUBECONFIG when set, else the service account."""
    if os.environ.get("KUBECONFIG"):
        return kopf.login_with_kubeconfig(**kwargs)
    return kopf.login_with_service_account(**kwargs)


@kopf.on.startup()
def startup(
    settings: kopf.OperatorSettings,
    memo: Any,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    **kwargs: Any,
) -> None:
    """Kopf bookkeeping under our prefix, clients in memo, metrics server."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=c.GROUP)
    settings.persistence.diffbase_storage = NoDiffBase()  # no change handlers: see there
    settings.persistence.finalizer = f"{c.GROUP}/finalizer"
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.execution.max_workers = 8
    scan_cluster_only_when_cluster_wide(settings)
    api = api_client()
    # The indexes below, by their names.
    reader = Reader(
        api,
        pod_index=kwargs["worker_pods"],
        job_index=kwargs["jobs"],
        workload_index=kwargs["workloads"],
    )
    memo.changes = WorkerChanges()
    memo.queue = JobQueue(Controller(reader, Writer(api), OperatorSettings.from_env()))
    metrics.serve(int(os.environ.get(METRICS_PORT_ENV, c.OPERATOR_METRICS_PORT)))
    logger.info("kubetune operator started")


@kopf.index(
    "",
    "v1",
    "pods",
    labels={c.LABEL_JOB: kopf.PRESENT, c.LABEL_MANAGED_BY: c.MANAGED_BY, c.LABEL_ROLE: "worker"},
)
def worker_pods(
    namespace: str | None, labels: Mapping[str, str], body: kopf.Body, **_: Any
) -> dict[tuple[str, str], dict[str, Any]]:
    """Worker pods by (namespace, job), kept from the pod watch, so a pass reads its pods here
    instead of listing them. Kopf fills every index before it calls any handler, so the first
    passes after a start already see all pods."""
    return {(namespace or "default", labels[c.LABEL_JOB]): index_entry(body)}


@kopf.index(c.GROUP, c.VERSION, c.PLURAL)
def jobs(
    namespace: str | None, name: str, body: kopf.Body, **_: Any
) -> dict[tuple[str, str], dict[str, Any]]:
    """FineTuneJobs by (namespace, name), kept from the job watch, so a pass reads its job
    here instead of sending a GET."""
    return {(namespace or "default", name): job_entry(body)}


@kopf.index(
    wl.GROUP,
    wl.VERSION,
    wl.PLURAL,
    labels={c.LABEL_JOB: kopf.PRESENT, c.LABEL_MANAGED_BY: c.MANAGED_BY},
)
def workloads(
    namespace: str | None, labels: Mapping[str, str], body: kopf.Body, **_: Any
) -> dict[tuple[str, str], dict[str, Any]]:
    """Kueue Workloads of queued jobs by (namespace, job), kept from the Workload watch (only
    where Kueue is installed), so a pass reads Kueue's verdict here instead of a GET."""
    return {(namespace or "default", labels[c.LABEL_JOB]): workload_entry(body)}


@kopf.on.event(
    wl.GROUP,
    wl.VERSION,
    wl.PLURAL,
    labels={c.LABEL_JOB: kopf.PRESENT, c.LABEL_MANAGED_BY: c.MANAGED_BY},
)
async def workload_event(
    type: str | None, labels: Mapping[str, str], namespace: str | None, memo: Any, **_: Any
) -> None:
    """Kueue admitted, evicted or re-queued a job's Workload: reconcile the job."""
    await memo.queue.kick((namespace or "default", labels[c.LABEL_JOB]))


@kopf.on.cleanup()
def cleanup(memo: Any, **_: Any) -> None:
    """Drop pending timers."""
    memo.queue.close()


@kopf.on.event(c.GROUP, c.VERSION, c.PLURAL)
async def job_event(type: str, name: str, namespace: str | None, memo: Any, **_: Any) -> None:
    """Any change of a job (spec, suspend, progress) or the initial listing: reconcile it."""
    key = (namespace or "default", name)
    if type == "DELETED":
        memo.queue.forget(key)
        return
    await memo.queue.kick(key)


@kopf.on.event(
    "", "v1", "pods", labels={c.LABEL_JOB: kopf.PRESENT, c.LABEL_MANAGED_BY: c.MANAGED_BY}
)
async def pod_event(
    type: str | None,
    uid: str,
    body: kopf.Body,
    labels: Mapping[str, str],
    namespace: str | None,
    memo: Any,
    **_: Any,
) -> None:
    """A worker changed in a way the status reads: reconcile the job it belongs to."""
    if memo.changes.matters(type, uid, body):
        await memo.queue.kick((namespace or "default", labels[c.LABEL_JOB]))


@kopf.on.probe(id="reconcile_passes")
def probe(memo: Any, **_: Any) -> int:
    """Liveness: the operator answers and counts its passes."""
    return int(memo.queue.passes)


# Sweeps and schedules: their handlers register on import.
from kubetune_operator.lifecycle import handlers as _lifecycle  # noqa: E402, F401
