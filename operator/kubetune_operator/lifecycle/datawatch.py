"""The data-watch pod of a schedule's new-data trigger, and reading what it found.

The pod runs `python -m kubetune_trainer.datawatch` from the trainer image with the data
store's credentials from the template's dataset.credentialsSecret (secretKeyRef env, the same
variables the trainer's data reads use) and reports through its termination message, so the
operator needs no access to the store nor to Secrets, and no log reading.
"""

from __future__ import annotations

import json
from typing import Any

from kubetune_operator.api import constants as c
from kubetune_operator.api.schedule import FineTuneSchedule
from kubetune_operator.lifecycle.children import owner_reference
from kubetune_operator.reconcile.plan import OperatorSettings
from kubetune_operator.reconcile.render import container_security, pod_security
from kubetune_trainer.contract import S3_REQUIRED_KEYS, s3_credential_env

ROLE = "data-watch"


def pod_name(schedule: str, seq: int) -> str:
    """Data-watch pod number `seq` of a schedule: <schedule>-w<seq>."""
    return f"{schedule}-w{seq}"


def credential_env(secret: str | None) -> list[dict[str, Any]]:
    """The data store's keys from its secret, under the dataset store's variables."""
    if not secret:
        return []
    return [
        {
            "name": var,
            "valueFrom": {
                "secretKeyRef": {
                    "name": secret,
                    "key": key,
                    "optional": key not in S3_REQUIRED_KEYS,
                }
            },
        }
        for key, var in s3_credential_env("dataset").items()
    ]


def watch_pod(schedule: FineTuneSchedule, seq: int, settings: OperatorSettings) -> dict[str, Any]:
    """Pod `seq` that lists the trigger's prefix once and exits."""
    meta, spec = schedule.metadata, schedule.spec
    assert spec.trigger is not None
    data, res = spec.template.spec.dataset, spec.template.spec.resources
    args = ["--prefix", spec.trigger.new_data.prefix]
    if data.endpoint:
        args += ["--endpoint", data.endpoint]
    if data.region:
        args += ["--region", data.region]
    container: dict[str, Any] = {
        "name": "data-watch",
        "image": res.image or settings.trainer_image,
        "command": ["python", "-m", "kubetune_trainer.datawatch", *args],
        "env": [
            {"name": "PYTHONUNBUFFERED", "value": "1"},
            *credential_env(data.credentials_secret),
        ],
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
        "securityContext": container_security(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pull_policy = res.image_pull_policy or settings.image_pull_policy
    if pull_policy:
        container["imagePullPolicy"] = pull_policy
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security(),
        "containers": [container],
    }
    if res.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": s} for s in res.image_pull_secrets]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(meta.name, seq),
            "namespace": meta.namespace or "default",
            "labels": {
                c.LABEL_SCHEDULE: meta.name,
                c.LABEL_ROLE: ROLE,
                c.LABEL_MANAGED_BY: c.MANAGED_BY,
            },
            "ownerReferences": [owner_reference(c.SCHEDULE_KIND, meta.name, meta.uid)],
        },
        "spec": pod_spec,
    }


def outcome(pod: dict[str, Any]) -> tuple[str, Any]:
    """("running", None), ("listed", the listing), or ("failed", why) for a data-watch pod."""
    st = pod.get("status") or {}
    phase = st.get("phase")
    if phase not in ("Succeeded", "Failed"):
        return "running", None
    terminated: dict[str, Any] = {}
    for cs in st.get("containerStatuses") or []:
        terminated = (cs.get("state") or {}).get("terminated") or terminated
    message = str(terminated.get("message") or st.get("message") or "").strip()
    if phase == "Failed":
        return "failed", message or f"the data-watch pod failed (exit {terminated.get('exitCode')})"
    try:
        listing = json.loads(message)
    except json.JSONDecodeError:
        return "failed", f"the data-watch pod reported no listing: {message[:200]!r}"
    if not isinstance(listing, dict) or not isinstance(listing.get("version"), str):
        return "failed", "the data-watch pod's listing has no version"
    return "listed", listing
