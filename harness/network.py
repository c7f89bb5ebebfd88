"""Addresses of the test cluster's pod network, in one place.

Pods of the real test node live on a bridge the harness creates (BRIDGE, POD_CIDR), with the
node itself at NODE_IP. Services get ClusterIPs from SERVICE_CIDR, routed to the bridge; there
is no kube-proxy, so only the `kubernetes` Service works, at API_SERVICE_IP:443, where the
harness forwards to the apiserver on loopback. Nothing from POD_CIDR may leave by another
interface: no masquerade, no default route in pods, a FORWARD drop, DNS without a forwarder.
"""

from __future__ import annotations

BRIDGE = "kt0"
POD_CIDR = "10.77.0.0/24"
NODE_IP = "10.77.0.1"
SERVICE_CIDR = "10.77.1.0/24"
API_SERVICE_IP = "10.77.1.1"
API_SERVICE_PORT = 443
CLUSTER_DOMAIN = "cluster.local"
# Names the apiserver's serving certificate carries so that in-cluster clients can verify it.
API_SERVICE_NAMES = (
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    f"kubernetes.default.svc.{CLUSTER_DOMAIN}",
)
