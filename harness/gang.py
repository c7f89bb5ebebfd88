"""Gang schedulers as host processes against the test apiserver: the scheduler-plugins
scheduler with its Coscheduling plugin, and Volcano's vc-scheduler.

Each runs beside the control plane's kube-scheduler under its own schedulerName, so only pods
that ask for it are its business. CRDs and the scheduler profile come from the released module
the binary was built from (hack/build-schedulers.sh).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness import binaries, procs
from harness.controlplane import ControlPlane, log_tail, wait_established
from harness.wait import eventually

COSCHEDULING_SCHEDULER = "scheduler-plugins-scheduler"
VOLCANO_SCHEDULER = "volcano"
# Seconds a gang member waits in Permit for its siblings before the whole gang is rejected.
PERMIT_WAITING_SECONDS = 5
# Seconds before the coscheduling scheduler retries pods it found unschedulable.
UNSCHEDULABLE_RETRY_SECONDS = 10


@dataclass
class Scheduler:
    """A running scheduler process."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log, lines)

    def stop(self) -> None:
        procs.stop(self.process)


def _crds(cp: ControlPlane, paths: list[Path]) -> None:
    """Apply CRD files and wait until each is Established."""
    args = [x for p in paths for x in ("-f", str(p))]
    cp.kubectl("apply", "--server-side", "--force-conflicts", *args, timeout=120)
    wait_established(cp, cp.kubectl("get", *args, "-o", "name").stdout.split())


def coscheduling_crd(module: Path) -> Path:
    """The PodGroup (scheduling.x-k8s.io) CRD of scheduler-plugins."""
    return module / "manifests" / "coscheduling" / "crd.yaml"


def coscheduling_config(module: Path, kubeconfig: Path) -> dict[str, Any]:
    """scheduler-plugins' own Coscheduling configuration, as a second scheduler: its profile
    under COSCHEDULING_SCHEDULER, our kubeconfig, a short Permit wait so tests see a rejected
    gang quickly."""
    config: dict[str, Any] = yaml.safe_load(
        (module / "manifests" / "coscheduling" / "scheduler-config.yaml").read_text()
    )
    config["clientConnection"] = {"kubeconfig": str(kubeconfig)}
    config["leaderElection"] = {"leaderElect": False}
    for profile in config["profiles"]:
        profile["schedulerName"] = COSCHEDULING_SCHEDULER
        for plugin in profile.get("pluginConfig") or []:
            if plugin["name"] == "Coscheduling":
                plugin["args"]["permitWaitingTimeSeconds"] = PERMIT_WAITING_SECONDS
    return config


def start_coscheduling(cp: ControlPlane, workdir: Path) -> Scheduler:
    """Install the PodGroup CRD and start the scheduler-plugins scheduler."""
    binary = binaries.ensure_component(cp.bin_dir, "scheduler-plugins")
    module = binaries.module_dir("scheduler-plugins")
    workdir.mkdir(parents=True, exist_ok=True)
    _crds(cp, [coscheduling_crd(module)])
    config = workdir / "coscheduling.yaml"
    config.write_text(yaml.safe_dump(coscheduling_config(module, cp.kubeconfig)))
    log = workdir / "scheduler-plugins.log"
    # A gang the plugin rejected is retried on the next pod or PodGroup event, else after this
    # long (5 min by default): a freed node alone is no event the plugin listens to.
    retry = f"--pod-max-in-unschedulable-pods-duration={UNSCHEDULABLE_RETRY_SECONDS}s"
    argv = [str(binary), f"--config={config}", retry, "--secure-port=0", "--v=2"]
    scheduler = Scheduler(COSCHEDULING_SCHEDULER, procs.spawn(argv, log, cp.env()), log)
    return started(scheduler, "Starting Kubernetes Scheduler")


def started(scheduler: Scheduler, line: str, timeout: float = 60) -> Scheduler:
    """Return once the scheduler's log says `line`; fail with its log if it exits first."""

    def up() -> bool:
        if not scheduler.alive():
            raise AssertionError(f"{scheduler.name} exited:\n{scheduler.log_tail()}")
        return scheduler.log.exists() and line in scheduler.log.read_text(errors="replace")

    try:
        eventually(up, timeout, f"{scheduler.name} started", scheduler.log)
    except BaseException:
        scheduler.stop()
        raise
    return scheduler


def volcano_crds(module: Path) -> list[Path]:
    """Volcano's PodGroup and Queue CRDs (scheduling.volcano.sh) and the NUMA topology one its
    scheduler watches (nodeinfo.volcano.sh), from its release."""
    bases = module / "config" / "crd" / "volcano" / "bases"
    names = ("scheduling.volcano.sh_podgroups", "scheduling.volcano.sh_queues",
             "nodeinfo.volcano.sh_numatopologies")  # fmt: skip
    return [bases / f"{n}.yaml" for n in names]


def install_volcano_crds(cp: ControlPlane) -> Path:
    """Apply Volcano's scheduling CRDs; returns the module they came from."""
    module = binaries.module_dir("volcano")
    _crds(cp, volcano_crds(module))
    return module


STARTED_VOLCANO = "Scheduler completes Initialization and start to run"
VOLCANO_CONF = """\
actions: "enqueue, allocate, backfill"
tiers:
- plugins:
  - name: priority
  - name: gang
  - name: conformance
- plugins:
  - name: drf
  - name: predicates
  - name: proportion
  - name: nodeorder
  - name: binpack
"""


def start_volcano(cp: ControlPlane, workdir: Path) -> Scheduler:
    """Install Volcano's CRDs and start vc-scheduler (gang plugin on, default queue)."""
    binary = binaries.ensure_component(cp.bin_dir, "volcano")
    install_volcano_crds(cp)
    workdir.mkdir(parents=True, exist_ok=True)
    # A folder of its own: vc-scheduler reloads its conf on every change in the conf's folder,
    # and its own log there would make it reload without end.
    conf = workdir / "conf" / "volcano-scheduler.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(VOLCANO_CONF)
    log = workdir / "vc-scheduler.log"
    argv = [
        str(binary), f"--kubeconfig={cp.kubeconfig}", f"--scheduler-conf={conf}",
        f"--scheduler-name={VOLCANO_SCHEDULER}", "--leader-elect=false",
        "--listen-address=127.0.0.1:0", "--healthz-address=127.0.0.1:0",
        "--schedule-period=1s", "--cache-dumper=false", "--v=3",
    ]  # fmt: skip
    # vc-scheduler's vGPU support opens a client of its own at start, from $KUBECONFIG or else
    # ~/.kube/config: it gets ours, and a HOME with no other.
    env = {**cp.env(), "HOME": str(workdir)}
    return started(Scheduler(VOLCANO_SCHEDULER, procs.spawn(argv, log, env), log), STARTED_VOLCANO)
