"""With the chart installed, a trainer pod's token can report progress and checkpoints but not
rewrite what the operator decides from (phase, restarts, startTime, output, ...)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config

from harness import ControlPlane, eventually
from kubetune_operator.api import constants as c
from kubetune_operator.reconcile.parse import parse_job
from kubetune_operator.reconcile.plan import OperatorSettings, resolve
from kubetune_operator.reconcile.render import role, role_binding, service_account
from tests.k8s.chart.operator_run import JOB, chart_installed

pytestmark = pytest.mark.k8s

NOW = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
# What the operator wrote: a running first attempt.
OPERATOR_STATUS = {"phase": "Running", "attempt": 1, "restarts": 0, "startTime": NOW}
FORGED = [
    ({"restarts": -1000000}, "restarts"),  # would bypass backoffLimit
    ({"restarts": 0, "attempt": 1, "phase": "Succeeded"}, "status.phase"),
    ({"startTime": "2999-01-01T00:00:00Z"}, "status.startTime"),  # would defeat the deadline
    ({"output": {"uri": "pvc://other-team/weights"}}, "status.output"),  # a downstream's model
    ({"conditions": [{"type": "Succeeded", "status": "True"}]}, "status.conditions"),
]


def patch_status(api: client.ApiClient, namespace: str, status: dict[str, Any]) -> str | None:
    """Merge-patch the job's status; the refusal message, or None when it was written."""
    custom = client.CustomObjectsApi(api)
    try:
        custom.patch_namespaced_custom_object_status(
            c.GROUP, c.VERSION, namespace, c.PLURAL, "guarded", {"status": status}
        )
    except client.ApiException as err:
        assert err.status in (403, 422), err.body
        return str(err.body)
    return None


def test_a_trainer_token_writes_progress_only(
    control_plane: ControlPlane, crd_installed: str, namespace: str, tmp_path: Path
) -> None:
    scope = ["rbac.scope=namespaced", f"rbac.namespaces={{{namespace}}}"]
    with chart_installed(control_plane, namespace, tmp_path, *scope):
        manifest = JOB.format(name="guarded")
        control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=manifest)
        admin = config.new_client_from_config(config_file=str(control_plane.kubeconfig))
        assert patch_status(admin, namespace, OPERATOR_STATUS) is None  # system:masters may

        # The trainer's identity exactly as the operator renders it for this job.
        body = yaml.safe_load(manifest)
        body["metadata"].update(namespace=namespace, uid="u")
        plan = resolve(parse_job(body), 1, OperatorSettings())
        for obj in (service_account(plan), role(plan), role_binding(plan)):
            obj["metadata"].pop("ownerReferences")
            control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(obj))
        trainer = config.new_client_from_config(
            config_file=str(
                control_plane.kubeconfig_for_service_account(namespace, "guarded-trainer")
            )
        )
        first, field = FORGED[1]
        refusal = eventually(  # the policy takes a moment to be loaded
            lambda: patch_status(trainer, namespace, first), 30, "the status guard"
        )
        assert field in refusal
        for forged, field in FORGED:
            refusal = patch_status(trainer, namespace, forged)
            assert refusal is not None and field in refusal, (forged, refusal)

        progress = {"progress": {"step": 3, "totalSteps": 5}, "checkpoints": {"count": 1}}
        assert patch_status(trainer, namespace, progress) is None
        job = client.CustomObjectsApi(admin).get_namespaced_custom_object(
            c.GROUP, c.VERSION, namespace, c.PLURAL, "guarded"
        )
        status: dict[str, Any] = job["status"]  # type: ignore[index]
        assert {k: status[k] for k in OPERATOR_STATUS} == OPERATOR_STATUS
        assert status["progress"]["step"] == 3 and "output" not in status
