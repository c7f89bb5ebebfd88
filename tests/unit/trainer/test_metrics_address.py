"""The trainer's metrics endpoint binds where KUBETUNE_METRICS_ADDR says (pods sharing a host
network each bind their own pod IP)."""

from __future__ import annotations

import urllib.request

import pytest

from kubetune_trainer.metrics import Metrics, metrics_address

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "0.0.0.0"),
        ({"KUBETUNE_METRICS_ADDR": ""}, "0.0.0.0"),
        ({"KUBETUNE_METRICS_ADDR": "127.0.0.7"}, "127.0.0.7"),
    ],
)
def test_metrics_address(env: dict[str, str], expected: str) -> None:
    assert metrics_address(env) == expected


def test_two_endpoints_share_a_port_on_different_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.procs import free_port

    port = free_port()
    for ip, job in (("127.0.0.7", "a"), ("127.0.0.8", "b")):
        monkeypatch.setenv("KUBETUNE_METRICS_ADDR", ip)
        m = Metrics(job, 0)
        m.step.set(3)
        m.serve(port)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    for ip, job in (("127.0.0.7", "a"), ("127.0.0.8", "b")):
        with opener.open(f"http://{ip}:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
        assert f'kubetune_trainer_step{{job="{job}",rank="0"}} 3.0' in text
