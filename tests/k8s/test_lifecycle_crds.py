"""The FineTuneSweep and FineTuneSchedule CRDs against a real apiserver: they install, kubectl
knows them, and admission refuses what the offline models refuse, naming the field."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from harness import ControlPlane
from kubetune_operator.api import constants as c
from tests.k8s.apiserver import server_dry_run
from tests.unit.lifecycle_cases import INVALID_CASES, Case, valid_schedule, valid_sweep

pytestmark = pytest.mark.k8s


def plural_of(manifest: dict[str, Any]) -> str:
    return c.SWEEP_PLURAL if manifest["kind"] == c.SWEEP_KIND else c.SCHEDULE_PLURAL


@pytest.fixture(scope="module")
def dry_run_namespace(control_plane: ControlPlane) -> Iterator[str]:
    name = f"lifecycle-crds-{uuid.uuid4().hex[:6]}"
    control_plane.kubectl("create", "namespace", name)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_crds_are_established_with_short_names(
    control_plane: ControlPlane, crd_installed: str
) -> None:
    for plural, short in (
        (c.SWEEP_PLURAL, c.SWEEP_SHORT_NAMES),
        (c.SCHEDULE_PLURAL, c.SCHEDULE_SHORT_NAMES),
    ):
        crd = json.loads(
            control_plane.kubectl("get", "crd", f"{plural}.{c.GROUP}", "-o", "json").stdout
        )
        conditions = {x["type"]: x["status"] for x in crd["status"]["conditions"]}
        assert conditions.get("Established") == "True", conditions
        assert crd["status"]["acceptedNames"]["shortNames"] == short


def test_valid_manifests_are_accepted(
    k8s_api: Any, crd_installed: str, dry_run_namespace: str
) -> None:
    for manifest in (valid_sweep(), valid_schedule()):
        assert server_dry_run(k8s_api, dry_run_namespace, manifest, plural_of(manifest)) is None


@pytest.mark.parametrize("case", INVALID_CASES, ids=lambda x: x.id)
def test_apiserver_refuses_and_names_the_field(
    k8s_api: Any, crd_installed: str, dry_run_namespace: str, case: Case
) -> None:
    manifest = case.manifest()
    message = server_dry_run(k8s_api, dry_run_namespace, manifest, plural_of(manifest))
    assert message is not None, f"{case.id}: accepted by the apiserver"
    assert case.field in message, f"{case.id}: message does not name {case.field}: {message}"


def test_sweep_is_immutable_and_schedule_template_is_not(
    k8s_api: Any, crd_installed: str, dry_run_namespace: str
) -> None:
    """A running sweep's search cannot change under it; a schedule's next runs may use a new
    template (a job's own immutability rules do not apply to a template)."""
    api = client.CustomObjectsApi(k8s_api)
    ns = dry_run_namespace
    sweep = api.create_namespaced_custom_object(
        c.GROUP, c.VERSION, ns, c.SWEEP_PLURAL, valid_sweep("immutable")
    )
    changed = copy.deepcopy(sweep)
    changed["spec"]["parallelism"] = 3
    with pytest.raises(ApiException) as refused:
        api.replace_namespaced_custom_object(
            c.GROUP, c.VERSION, ns, c.SWEEP_PLURAL, "immutable", changed
        )
    assert "spec is immutable once the sweep is created" in str(refused.value.body)

    schedule = api.create_namespaced_custom_object(
        c.GROUP, c.VERSION, ns, c.SCHEDULE_PLURAL, valid_schedule("mutable")
    )
    schedule["spec"]["template"]["spec"]["training"]["learningRate"] = 0.001
    schedule["spec"]["template"]["spec"]["model"]["source"] = "s3://models/other"
    api.replace_namespaced_custom_object(
        c.GROUP, c.VERSION, ns, c.SCHEDULE_PLURAL, "mutable", schedule
    )
    got = api.get_namespaced_custom_object(c.GROUP, c.VERSION, ns, c.SCHEDULE_PLURAL, "mutable")
    assert got["spec"]["template"]["spec"]["training"]["learningRate"] == 0.001


def test_kubectl_shows_the_columns(
    control_plane: ControlPlane, crd_installed: str, dry_run_namespace: str
) -> None:
    ns = dry_run_namespace
    control_plane.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(valid_sweep("columns")))
    out = control_plane.kubectl("get", "ftsweep", "columns", "-n", ns).stdout
    assert out.split()[:5] == ["NAME", "PHASE", "TRIALS", "BEST", "OBJECTIVE"], out
    control_plane.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(valid_schedule("columns")))
    out = control_plane.kubectl("get", "ftsched", "columns", "-n", ns).stdout
    assert out.split()[:6] == ["NAME", "SCHEDULE", "SUSPEND", "LAST-RUN", "RESULT", "PROMOTED"], out
    explained = control_plane.kubectl("explain", "finetunesweep.spec.parameters.path", check=False)
    assert explained.returncode == 0 and "training.learningRate" in explained.stdout, (
        explained.stderr
    )
