"""Every generated bad manifest (tests/bad_manifests.py) that JSON can carry is refused by the
real apiserver (dry run, strict field validation) naming the field, each answer in under a
second; the few it cannot refuse (free-form deepspeed.config) carry the reason, and the operator
refuses those. The table is printed (and kept as bad-manifests-apiserver.md)."""

from __future__ import annotations

import json
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest

from kubetune_operator.api import constants as c
from tests.bad_manifests import Stats, all_cases, table

pytestmark = pytest.mark.k8s

CASES = [case for case in all_cases() if case.json]


@pytest.fixture(scope="module")
def dry_run_namespace(control_plane: Any) -> Iterator[str]:
    name = f"bad-manifests-{uuid.uuid4().hex[:6]}"
    control_plane.kubectl("create", "namespace", name)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


def dry_run(k8s_api: Any, namespace: str, body: str) -> tuple[int, str]:
    """POST the manifest's JSON as it is (dry run, strict); HTTP status and message."""
    path = f"/apis/{c.GROUP}/{c.VERSION}/namespaces/{namespace}/{c.PLURAL}"
    response = k8s_api.rest_client.pool_manager.request(
        "POST",
        k8s_api.configuration.host + path + "?dryRun=All&fieldValidation=Strict",
        body=body.encode(),
        headers={"Content-Type": "application/json"},  # the client's pool holds its certificate
        timeout=30,
    )
    data = response.data.decode()
    try:
        return response.status, str(json.loads(data).get("message", data))
    except ValueError:
        return response.status, data


def test_every_bad_manifest_is_refused_by_the_apiserver_naming_the_field(
    k8s_api: Any, crd_installed: str, dry_run_namespace: str, tmp_path_factory: Any
) -> None:
    stats: dict[str, Stats] = defaultdict(Stats)
    failures, slowest = [], (0.0, "")
    for case in CASES:
        s = stats[case.category]
        s.cases += 1
        start = time.monotonic()
        status, message = dry_run(k8s_api, dry_run_namespace, case.text())
        seconds = time.monotonic() - start
        slowest = max(slowest, (seconds, case.id))
        if status >= 500:
            s.crashes += 1
            failures.append(f"{case.id}: HTTP {status}: {message[:300]}")
        elif status < 300:
            s.accepted.append(case.id)
            if not case.apiserver_admits:
                failures.append(f"{case.id}: accepted by the apiserver")
        else:
            s.refused += 1
            if case.field in message:
                s.named += 1
            else:
                failures.append(
                    f"{case.id}: HTTP {status} does not name {case.field}: {message[:300]}"
                )
    report = table(stats)
    admitted = sorted({c.apiserver_admits for c in CASES if c.apiserver_admits})
    out = tmp_path_factory.getbasetemp() / "bad-manifests-apiserver.md"
    out.write_text(report + "\n\naccepted because: " + "; ".join(admitted) + "\n")
    print(f"\napiserver, {len(CASES)} bad manifests:\n{report}\nslowest {slowest}\n{admitted}")
    assert not failures, f"{len(failures)} of {len(CASES)}:\n" + "\n".join(failures[:80])
