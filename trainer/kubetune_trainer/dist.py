"""Distributed setup from torchrun's environment: gloo on CPU, NCCL on GPU."""

from __future__ import annotations

import os
from dataclasses import dataclass

from .contract import MASTER_PORT


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the job."""

    rank: int
    local_rank: int
    world_size: int
    node_rank: int

    @property
    def is_main(self) -> bool:
        """Rank 0 commits manifests, reports progress and exports."""
        return self.rank == 0


def read_env(env: dict[str, str] | None = None) -> DistEnv:
    """Rank, local rank, world size and node rank as torchrun sets them (single process if unset)."""
    e = os.environ if env is None else env
    return DistEnv(
        rank=int(e.get("RANK", "0")),
        local_rank=int(e.get("LOCAL_RANK", "0")),
        world_size=int(e.get("WORLD_SIZE", "1")),
        node_rank=int(e.get("GROUP_RANK", e.get("NODE_RANK", "0"))),
    )


def backend_for(cuda_available: bool) -> str:
    """NCCL where GPUs exist, gloo otherwise."""
    return "nccl" if cuda_available else "gloo"


def setup() -> DistEnv:
    """Initialise the process group through DeepSpeed (which reads MASTER_ADDR/PORT) and pin the GPU."""
    import deepspeed
    import torch

    env = read_env()
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(MASTER_PORT))
    os.environ.setdefault("RANK", str(env.rank))
    os.environ.setdefault("LOCAL_RANK", str(env.local_rank))
    os.environ.setdefault("WORLD_SIZE", str(env.world_size))
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(env.local_rank)
    deepspeed.init_distributed(dist_backend=backend_for(cuda))
    return env


def cleanup() -> None:
    """Tear the process group down so the process exits promptly."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
