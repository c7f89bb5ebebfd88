"""Start and stop a real Kubernetes control plane (etcd, kube-apiserver, controller manager,
scheduler) on 127.0.0.1 for the k8s and e2e tests, and wait for what it does."""

from harness.controlplane import ControlPlane, start_control_plane
from harness.wait import WaitTimeout, eventually

__all__ = ["ControlPlane", "WaitTimeout", "eventually", "start_control_plane"]
