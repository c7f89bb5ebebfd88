"""The test node's configuration keeps the network rule: pod addresses only on the bridge the
test creates, no masquerade, no route out, DNS without a forwarder, images never pulled."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
import yaml

from harness import network, nodeclean
from harness.node import CONF_DIR, render

pytestmark = pytest.mark.unit

VALUES = {
    "state": "/var/tmp/kubetune-node",
    "image_store": "/root/.cache/kubetune/node/containerd",
    "socket": "/var/tmp/kubetune-node/containerd.sock",
    "pause_image": "localhost/kubetune/pause:1",
    "runc": "/usr/sbin/runc",
    "cni_bin": "/usr/lib/cni",
    "bridge": network.BRIDGE,
    "pod_cidr": network.POD_CIDR,
    "service_cidr": network.SERVICE_CIDR,
    "node_ip": network.NODE_IP,
    "cluster_domain": network.CLUSTER_DOMAIN,
    "ca_cert": "/tmp/ca.crt",
}


def test_pods_live_on_the_bridge_without_masquerade_or_a_route_out() -> None:
    conf = json.loads(render("cni.conflist", VALUES))
    bridge = conf["plugins"][0]
    assert (bridge["type"], bridge["bridge"]) == ("bridge", network.BRIDGE)
    assert bridge["ipMasq"] is False and bridge["isDefaultGateway"] is False
    assert bridge["ipam"]["ranges"] == [[{"subnet": network.POD_CIDR, "gateway": network.NODE_IP}]]
    assert bridge["ipam"]["routes"] == [{"dst": network.SERVICE_CIDR, "gw": network.NODE_IP}]


def test_nothing_from_the_pod_subnet_leaves_by_another_interface() -> None:
    rule = " ".join(nodeclean.NO_EGRESS_RULE)
    assert rule.startswith(f"-s {network.POD_CIDR} ! -o {network.BRIDGE} ")
    assert rule.endswith("-j DROP")


def test_cluster_dns_has_no_forwarder() -> None:
    corefile = render("Corefile", VALUES)
    directives = [
        line.split()[0]
        for line in corefile.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert "forward" not in directives and "proxy" not in directives
    assert corefile.count(f"bind {network.NODE_IP}") == 2
    assert "rcode NXDOMAIN" in corefile


def test_every_registry_is_a_closed_loopback_port() -> None:
    hosts = tomllib.loads((CONF_DIR / "hosts.toml").read_text())
    assert hosts["server"].startswith("http://127.0.0.1:")
    assert list(hosts["host"]) == [hosts["server"]]
    containerd = tomllib.loads(render("containerd.toml", VALUES))
    images = containerd["plugins"]["io.containerd.cri.v1.images"]
    assert images["registry"]["config_path"] == f"{VALUES['state']}/certs.d"


def test_kubelet_serves_on_the_node_address_only() -> None:
    kubelet = yaml.safe_load(render("kubelet.yaml", VALUES))
    assert kubelet["address"] == network.NODE_IP and kubelet["readOnlyPort"] == 0
    assert kubelet["healthzBindAddress"] == "127.0.0.1"
    assert kubelet["authentication"]["anonymous"]["enabled"] is False
    assert kubelet["clusterDNS"] == [network.NODE_IP]
    assert Path(kubelet["containerRuntimeEndpoint"].removeprefix("unix://")) == Path(
        VALUES["socket"]
    )
