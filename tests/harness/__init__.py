"""Start and stop a real Kubernetes control plane (etcd, kube-apiserver, controller manager,
scheduler) on 127.0.0.1 for the k8s and e2e tests."""

from tests.harness.controlplane import ControlPlane, start_control_plane

__all__ = ["ControlPlane", "start_control_plane"]
