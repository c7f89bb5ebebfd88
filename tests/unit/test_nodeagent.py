"""The node agent's pure parts: $(VAR) expansion, /etc/hosts of headless Services, pod phase."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.nodeagent import podspec, podstatus

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "expected"),
    [("$(A)-$(B)", "1-$(B)"), ("$$(A)", "$(A)"), ("cost $5", "cost $5"), ("$(A", "$(A")],
)
def test_expand_follows_kubernetes_rules(text: str, expected: str) -> None:
    """$(VAR) expansion: known names replaced, $$ escapes, unknown kept."""
    assert podspec.expand(text, {"A": "1"}) == expected


def test_hosts_file_lists_only_pods_selected_by_a_headless_service() -> None:
    """Names exist for running pods with hostname+subdomain under a matching headless Service."""

    def pod(
        name: str, ip: str, ns: str = "a", labels: dict[str, str] | None = None
    ) -> dict[str, Any]:
        return {
            "metadata": {"name": name, "namespace": ns, "labels": labels or {"job": "j"}},
            "spec": {"hostname": name, "subdomain": "svc1"},
            "status": {"podIP": ip, "phase": "Running"},
        }

    services = [
        {
            "metadata": {"name": "svc1", "namespace": "a"},
            "spec": {"clusterIP": "None", "selector": {"job": "j"}},
        }
    ]
    pods = [
        pod("w0", "127.0.0.2"),
        pod("w1", "127.0.0.3"),
        pod("x", "127.0.0.4", labels={"job": "other"}),
        pod("y", "127.0.0.5", ns="b"),
    ]
    entries = podspec.host_entries(pods, services)
    assert [e.hostname for e in entries] == ["w0", "w1"]
    text = podspec.hosts_file(pods[0], "127.0.0.2", entries)
    assert "127.0.0.3\tw1.svc1.a.svc.cluster.local w1.svc1.a.svc w1.svc1.a w1.svc1\n" in text
    assert "127.0.0.2\tw0.svc1.a.svc.cluster.local w0.svc1.a.svc w0.svc1.a w0.svc1 w0\n" in text
    assert "127.0.0.4" not in text


def test_phase_under_restart_policy_never() -> None:
    """All exited 0 -> Succeeded; one non-zero -> Failed; otherwise Running/Pending."""
    ok = podstatus.ContainerState("a", "", started_at="t", exit_code=0)
    bad = podstatus.ContainerState("b", "", started_at="t", exit_code=3)
    running = podstatus.ContainerState("c", "", started_at="t")
    assert podstatus.phase([ok], False) == "Succeeded"
    assert podstatus.phase([ok, bad], False) == "Failed"
    assert podstatus.phase([ok, running], False) == "Running"
    assert podstatus.phase([podstatus.ContainerState("d", "")], False) == "Pending"
