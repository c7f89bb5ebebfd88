"""A test-only kubelet stand-in: runs pods bound to its Node as local processes."""

from tests.e2e.nodeagent.agent import NodeAgent

__all__ = ["NodeAgent"]
