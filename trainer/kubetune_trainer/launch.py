"""The pod entry point: torchrun over this node's ranks, with the trainer's exit code preserved.

    python -m kubetune_trainer.launch --config trainer.json

Reads NNODES, NODE_RANK, NPROC_PER_NODE, MASTER_ADDR, MASTER_PORT (single node without them)
and KUBETUNE_GRACE_SECONDS, the time the pod has after SIGTERM.
torchrun itself exits 1 when it is sent SIGTERM, even when every rank saved a checkpoint and
exited 43; this wrapper forwards SIGTERM and reports what the ranks reported instead.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from .contract import (
    CONFIG_ENV,
    CONFIG_FILE_NAME,
    EXIT_BAD_INPUT,
    EXIT_DIR_ENV,
    EXIT_GPU_OOM,
    EXIT_OK,
    EXIT_PREEMPTED,
    GRACE_ENV,
    MASTER_PORT,
)


def torchrun_args(env: dict[str, str], config: str) -> list[str]:
    """The torchrun command line for this node."""
    nproc = env.get("NPROC_PER_NODE", "1")
    cmd = [sys.executable, "-m", "kubetune_trainer.torchrun", "--nproc-per-node", nproc]
    nnodes = env.get("NNODES", "1")
    if nnodes == "1" and "MASTER_ADDR" not in env:
        cmd.append("--standalone")
    else:
        cmd += [
            "--nnodes", nnodes,
            "--node-rank", env.get("NODE_RANK", "0"),
            "--master-addr", env.get("MASTER_ADDR", "127.0.0.1"),
            "--master-port", env.get("MASTER_PORT", str(MASTER_PORT)),
        ]  # fmt: skip
    return [*cmd, "-m", "kubetune_trainer", "--config", config]


# Left of the grace period for torchrun and this launcher to exit once the ranks are stopped.
EXIT_MARGIN_SECONDS = 10


def with_shutdown_timeout(env: dict[str, str]) -> dict[str, str]:
    """env with torchrun's shutdown timeout set from the pod's grace period (GRACE_ENV).

    On SIGTERM torchrun signals the ranks and kills them after its shutdown timeout, 30 s by
    default: too short for a checkpoint of a large model, while the pod may have minutes. The
    ranks get the grace period less a margin for torchrun and the launcher to exit.
    """
    grace = env.get(GRACE_ENV)
    if not grace:
        return env
    seconds = max(1, int(grace) - EXIT_MARGIN_SECONDS)
    return {**env, "TORCH_ELASTIC_SHUTDOWN_TIMEOUT": str(seconds)}


def with_own_bin_first(env: dict[str, str]) -> dict[str, str]:
    """env with this interpreter's bin folder first on PATH.

    DeepSpeed JIT-builds its ops with whichever `ninja` PATH finds first, and two ninja
    versions write different build hashes, so the shared op cache would be rebuilt (minutes)
    each time the caller's PATH differs. The environment's own tools make it the same ninja
    every time.
    """
    own = os.path.dirname(sys.executable)
    rest = [p for p in env.get("PATH", "").split(os.pathsep) if p and p != own]
    return {**env, "PATH": os.pathsep.join([own, *rest])}


def combine(torchrun_code: int, rank_codes: list[int]) -> int:
    """One exit code for the node: bad input first, then GPU out of memory, then preemption,
    else torchrun's (which is 1 for any failed rank)."""
    if EXIT_BAD_INPUT in rank_codes:
        return EXIT_BAD_INPUT
    if EXIT_GPU_OOM in rank_codes:
        return EXIT_GPU_OOM
    if (
        rank_codes
        and all(c in (EXIT_PREEMPTED, EXIT_OK) for c in rank_codes)
        and EXIT_PREEMPTED in rank_codes
    ):
        return EXIT_PREEMPTED
    return torchrun_code


def read_codes(folder: Path) -> list[int]:
    """Exit codes the ranks left in folder."""
    codes = []
    for p in sorted(folder.glob("rank-*.code")):
        try:
            codes.append(int(p.read_text().strip()))
        except ValueError:
            continue
    return codes


def main(argv: list[str] | None = None) -> int:
    """Run torchrun, forward SIGTERM/SIGINT to it, and return the combined exit code."""
    p = argparse.ArgumentParser(prog="python -m kubetune_trainer.launch", description=__doc__)
    p.add_argument("--config", default=os.environ.get(CONFIG_ENV, CONFIG_FILE_NAME))
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kubetune-exit-") as folder:
        env = with_shutdown_timeout(with_own_bin_first({**os.environ, EXIT_DIR_ENV: folder}))
        proc = subprocess.Popen(torchrun_args(env, args.config), env=env)

        def forward(signum: int, frame: object) -> None:
            proc.send_signal(signum)

        signal.signal(signal.SIGTERM, forward)
        signal.signal(signal.SIGINT, forward)
        code = proc.wait()
        return combine(code, read_codes(Path(folder)))


if __name__ == "__main__":
    sys.exit(main())
