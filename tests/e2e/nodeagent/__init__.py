"""A test-only kubelet stand-in: runs the pods bound to its Node as local processes.

Usage (the `node_agent` / `node_agent_factory` fixtures do this):

    agent = NodeAgent(kubeconfig, state_dir, name="e2e-node", cpu="8", memory="16Gi").start()
    agent.pod_ip(ns, name)            # the pod's 127.0.0.x address
    agent.logs(ns, name, container)   # its stdout+stderr (kubectl logs does not work)
    agent.kill_pod(ns, name, signal.SIGKILL, reason="OOMKilled")
    agent.kill_node()                 # every pod killed, heartbeats and reports stop
    agent.stop()

Pods share the host network namespace: each gets its own loopback address, so a server must
bind its pod IP (fieldRef status.podIP); two pods binding 0.0.0.0 on one port collide.
restartPolicy Never only: containers run once whatever the policy says.
"""

from tests.e2e.nodeagent.agent import NodeAgent

__all__ = ["NodeAgent"]
