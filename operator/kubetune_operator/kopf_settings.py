"""Kopf settings that depend on how `kopf run` was started."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

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


class NoDiffBase(kopf.DiffBaseStorage):
    """A diff-base storage that keeps nothing.

    Kopf builds an object's "essence" (a deep copy of the whole body) and diffs it against the
    last handled one on every watch event, for its change handlers (on.create/update/resume)
    and daemons. This operator has neither: every event only kicks the job's queue, and the
    decision reads the current state. With ten thousand pods that copy was a real part of the
    operator's CPU for nothing; adding a change handler needs a real storage back (a test
    checks that there is none).
    """

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        return cast(kopf.BodyEssence, {})

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None
