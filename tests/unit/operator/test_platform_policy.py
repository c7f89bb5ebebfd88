"""The platform policy: what a job may use, refused with the field and what is allowed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetune_operator.api.platform import PlatformPolicy
from kubetune_operator.cli import main
from kubetune_operator.reconcile.plan import OperatorSettings, policy_violations
from tests.unit.operator.helpers import job, manifest

pytestmark = pytest.mark.unit

STRICT = PlatformPolicy.model_validate(
    {
        "allowedImages": ["registry.example.com/ml/*"],
        "allowedServiceAccounts": ["trainer-*"],
        "allowedPriorityClasses": ["training", "batch-*"],
        "allowedTolerationKeys": ["nvidia.com/gpu"],
        "allowedEndpoints": {
            "model": ["default", "https://hub.example.com"],
            "dataset": ["http://minio.storage:9000"],
            "checkpoint": ["http://minio.storage:9000"],
            "output": ["http://minio.storage:9000"],
        },
        "allowTrustRemoteCode": False,
    }
)


def refusals(policy: PlatformPolicy = STRICT, **spec: Any) -> list[str]:
    return policy_violations(job(**spec).spec, OperatorSettings(policy=policy))


def test_the_example_job_is_allowed() -> None:
    assert refusals() == []
    assert refusals(PlatformPolicy()) == []


def resources(**changes: Any) -> dict[str, Any]:
    return {**manifest()["spec"]["resources"], **changes}


@pytest.mark.parametrize(
    "spec, expected",
    [
        (
            {"resources": resources(image="docker.io/evil/miner:1")},
            "spec.resources.image: 'docker.io/evil/miner:1' is not allowed by the platform "
            "policy (allowed: registry.example.com/ml/*)",
        ),
        ({"resources": resources(serviceAccountName="admin")}, "spec.resources.serviceAccountName: 'admin'"),
        ({"resources": resources(priorityClassName="system-node-critical")}, "spec.resources.priorityClassName"),
        ({"resources": resources(tolerations=[{"operator": "Exists"}])}, "spec.resources.tolerations[0].key: '(any)'"),
        ({"resources": resources(tolerations=[{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}])}, "spec.resources.tolerations[0].key"),
        ({"model": {**manifest()["spec"]["model"], "trustRemoteCode": True}}, "spec.model.trustRemoteCode"),
        ({"model": {**manifest()["spec"]["model"], "endpoint": "https://elsewhere.example.org"}}, "spec.model.endpoint: 'https://elsewhere.example.org'"),
        ({"checkpoint": {**manifest()["spec"]["checkpoint"], "endpoint": "http://minio.storage.evil.io:9000"}}, "spec.checkpoint.endpoint"),
        ({"checkpoint": {**manifest()["spec"]["checkpoint"], "endpoint": None}}, "spec.checkpoint.endpoint: '(default)'"),
        ({"output": {"uri": "s3://models/x", "endpoint": "https://s3.example.org"}}, "spec.output.endpoint"),
    ],
)  # fmt: skip
def test_a_job_beyond_the_policy_is_refused_naming_the_field(
    spec: dict[str, Any], expected: str
) -> None:
    problems = refusals(**spec)
    assert problems and all("not allow" in p for p in problems), problems
    assert problems[0].startswith(expected), problems


def test_the_output_uses_the_checkpoint_endpoint_when_it_names_none() -> None:
    """The output inherits the checkpoint's endpoint, and its list checks that."""
    policy = STRICT.model_copy(
        update={
            "allowed_endpoints": STRICT.allowed_endpoints.model_copy(
                update={"output": ["https://s3.example.org"]}
            )
        }
    )
    assert refusals(policy)[0].startswith(
        "spec.output.endpoint: 'http://minio.storage:9000' is not allowed"
    )


def test_validate_checks_a_manifest_against_a_policy_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = manifest()
    doc["spec"]["resources"]["image"] = "docker.io/evil/miner:1"
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(doc))
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(STRICT.model_dump(by_alias=True)))
    assert main(["validate", str(tmp_path / "job.yaml")]) == 0
    assert (
        main(["validate", str(tmp_path / "job.yaml"), "--policy", str(tmp_path / "policy.yaml")])
        == 1
    )
    assert (
        "spec.resources.image: 'docker.io/evil/miner:1' is not allowed" in capsys.readouterr().err
    )


def test_a_policy_that_does_not_parse_stops_the_operator() -> None:
    with pytest.raises(ValueError, match="KUBETUNE_POLICY: not a valid platform policy"):
        PlatformPolicy.from_env({"KUBETUNE_POLICY": '{"allowedImage": ["x"]}'})


def test_tracking_servers_and_the_push_hub_are_endpoints_the_policy_checks() -> None:
    policy = PlatformPolicy.model_validate(
        {"allowedEndpoints": {"tracking": ["https://mlflow.example.com"], "push": ["default"]}}
    )
    output = {
        **manifest()["spec"]["output"],
        "push": {"repo": "org/m", "endpoint": "https://hub.evil.io"},
    }
    tracking = {"mlflow": {"trackingUri": "https://mlflow.evil.io:5000"}, "wandb": {"project": "p"}}
    refused = refusals(policy, output=output, tracking=tracking)
    assert refused == [
        "spec.tracking.mlflow.trackingUri: 'https://mlflow.evil.io:5000' is not allowed by the "
        "platform policy (allowed: https://mlflow.example.com)",
        "spec.tracking.wandb.baseUrl: '(default)' is not allowed by the platform policy "
        "(allowed: https://mlflow.example.com)",
        "spec.output.push.endpoint: 'https://hub.evil.io' is not allowed by the platform policy "
        "(allowed: default)",
    ]
    allowed = {"mlflow": {"trackingUri": "https://mlflow.example.com/"}}
    assert refusals(policy, tracking=allowed) == []
