"""Start one torchrun agent per worker on this machine and treat them as a gang.

Each agent gets exactly the env a worker pod gets (rendezvous on 127.0.0.1); when any agent
fails, the others are stopped with SIGTERM (so they can checkpoint) like the operator does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from kubetune_operator.local.devices import VISIBLE, device_slices, visible_devices
from kubetune_operator.reconcile.env import launcher_args, torchrun_env
from kubetune_operator.reconcile.plan import Plan
from kubetune_trainer.checkpoint.seal import local_key
from kubetune_trainer.contract import CHECKPOINT_KEY_ENV, CONFIG_ENV, TERMINATION_LOG_ENV


def free_port() -> int:
    """A free TCP port on 127.0.0.1 for the rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def worker_env(
    plan: Plan,
    rank: int,
    port: int,
    config_file: Path,
    base: dict[str, str],
    devices: str | None = None,
) -> dict[str, str]:
    """The pod's env for node `rank`, on loopback, with its own GPUs (`devices`, a
    CUDA_VISIBLE_DEVICES value) like a pod, plus the user's literal env values."""
    env = dict(base)
    env.update(torchrun_env(plan, rank, "127.0.0.1", port))
    if devices is not None:
        env[VISIBLE] = devices
    env[CONFIG_ENV] = str(config_file)
    env.setdefault("OMP_NUM_THREADS", "1")
    # DeepSpeed JIT-builds its CPU ops once; one cache per machine keeps later runs fast.
    env.setdefault(
        "TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "kubetune" / "torch_extensions")
    )
    if plan.spec.resources.gpus_per_node == 0:
        env.setdefault("DS_ACCELERATOR", "cpu")
    if plan.checkpoints and not env.get(CHECKPOINT_KEY_ENV):
        env[CHECKPOINT_KEY_ENV] = local_key()  # the pods get the namespace's Secret instead
    for var in plan.spec.resources.env or []:
        if var.value is not None:
            env[var.name] = var.value
    return env


def worker_argv(config_file: Path, python: str = sys.executable) -> list[str]:
    """The pod's command line, with this interpreter."""
    return [python, *launcher_args(str(config_file))]


def termination_log(log_dir: Path, rank: int) -> Path:
    """The file worker `rank` leaves its error in (the pod's /dev/termination-log)."""
    return log_dir / f"worker-{rank}.termination-log"


@dataclass(frozen=True)
class GangResult:
    """Exit codes and termination messages by node rank; the first failing rank, if any."""

    exit_codes: tuple[int, ...]
    failed_rank: int | None
    messages: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.failed_rank is None

    @property
    def cause(self) -> str | None:
        """What the failed worker said went wrong, else what another one said (a worker
        stopped because its peer failed usually says nothing)."""
        said = [m for m in self.messages if m]
        if self.failed_rank is not None and self.failed_rank < len(self.messages):
            said.insert(0, self.messages[self.failed_rank])
        return next((m for m in said if m), None)


def run_gang(
    plan: Plan,
    config_file: Path,
    log_dir: Path,
    command: list[str] | None = None,
    show_rank0: bool = True,
) -> GangResult:
    """Run every worker to completion; `command` replaces the trainer (tests use a stand-in)."""
    port = free_port()
    base = dict(os.environ)
    slices = device_slices(
        visible_devices(base) if plan.spec.resources.gpus_per_node else None,
        plan.nodes,
        plan.spec.resources.gpus_per_node,
    )
    log_dir.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen[bytes]] = []
    logs = []
    try:
        for rank in range(plan.nodes):
            env = worker_env(plan, rank, port, config_file, base, slices[rank])
            message = termination_log(log_dir, rank)
            message.write_text("")  # created empty, as the kubelet does in each container
            env[TERMINATION_LOG_ENV] = str(message)
            argv = command or worker_argv(config_file)
            log = (log_dir / f"worker-{rank}.log").open("wb")
            logs.append(log)
            out = None if (rank == 0 and show_rank0) else log
            procs.append(
                subprocess.Popen(
                    argv,
                    env=env,
                    stdout=out,
                    stderr=out,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
        result = _wait(procs, plan.grace_seconds)
        said = tuple(termination_log(log_dir, r).read_text().strip() for r in range(plan.nodes))
        return dataclasses.replace(result, messages=said)
    except BaseException:
        _stop(procs, plan.grace_seconds)
        raise
    finally:
        for log in logs:
            log.close()


def _wait(procs: list[subprocess.Popen[bytes]], grace: float) -> GangResult:
    """Wait for all; on the first failure stop the rest (gang semantics)."""
    failed: int | None = None
    while any(p.poll() is None for p in procs):
        for rank, p in enumerate(procs):
            if failed is None and p.poll() not in (None, 0):
                failed = rank
                _stop(procs, grace)
        time.sleep(0.2)
    if failed is None:
        failed = next((r for r, p in enumerate(procs) if p.returncode != 0), None)
    return GangResult(tuple(int(p.returncode) for p in procs), failed)


def _stop(procs: list[subprocess.Popen[bytes]], grace: float) -> None:
    """SIGTERM each worker, SIGKILL its process group after the grace period: what the kubelet
    does to a pod (the launcher forwards the SIGTERM to torchrun once; a second one, to the
    whole group, would cut torchrun's wait for the ranks' checkpoint short)."""
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal(p.pid, signal.SIGKILL)
            p.wait()


def _signal(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
