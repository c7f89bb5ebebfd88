"""Kopf settings that depend on how `kopf run` was started."""

from __future__ import annotations

import kopf


def scan_cluster_only_when_cluster_wide(settings: kopf.OperatorSettings) -> None:
    """Turn off Kopf's cluster-wide scanning of namespaces and CRDs unless it runs with
    --all-namespaces.

    With --namespace (the chart's namespaced scope) the operator holds no cluster-wide grant, so
    Kopf's listings of namespaces and CRDs are refused; Kopf retries a 403 like any API error
    (settings.networking.error_backoffs: 54 s in all) and only then falls back to what
    scanning.disabled does at once: serve the given namespaces, and the resources the API
    discovery showed at start. Call it from a startup handler: Kopf sets
    settings.peering.clusterwide from the command line before those run, and starts scanning
    after them. Cluster-wide, scanning stays on so a CRD installed or upgraded later is noticed.
    """
    settings.scanning.disabled = not settings.peering.clusterwide
