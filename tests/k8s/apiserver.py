"""Small helpers for tests that talk to the real apiserver."""

from __future__ import annotations

import json
from typing import Any

from kubetune_operator.api import constants as c


def server_dry_run(
    k8s_api: Any, namespace: str, manifest: dict[str, Any], plural: str = c.PLURAL
) -> str | None:
    """Create the object (a FineTuneJob, or another kind by `plural`) with dryRun=All and strict
    field validation; the refusal message, or None when the apiserver accepted it."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    api = client.CustomObjectsApi(k8s_api)
    try:
        api.create_namespaced_custom_object(
            c.GROUP,
            c.VERSION,
            namespace,
            plural,
            manifest,
            dry_run="All",
            field_validation="Strict",
        )
    except ApiException as err:
        assert err.status in (400, 422), f"unexpected HTTP {err.status}: {err.body}"
        return str(json.loads(err.body or "{}").get("message", err.body))
    return None
