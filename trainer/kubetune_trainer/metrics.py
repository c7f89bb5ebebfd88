"""Prometheus metrics, one endpoint per rank (port = base + local rank)."""

from __future__ import annotations

import os
from typing import Any

from . import flops

PEAK_FLOPS = {
    "H100": 989e12,
    "H200": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "A10G": 125e12,
    "L4": 121e12,
}


def metrics_port(
    configured: int | None, local_rank: int, env: dict[str, str] | None = None
) -> int | None:
    """The port this rank serves on: KUBETUNE_METRICS_PORT or the config, plus the local rank."""
    e = os.environ if env is None else env
    base = e.get("KUBETUNE_METRICS_PORT")
    port = int(base) if base else configured
    return None if port is None or port <= 0 else port + local_rank


def metrics_address(env: dict[str, str] | None = None) -> str:
    """The address the endpoint binds: KUBETUNE_METRICS_ADDR (e.g. the pod IP from a fieldRef,
    so pods that share one network namespace do not collide on the port), else all addresses."""
    e = os.environ if env is None else env
    return e.get("KUBETUNE_METRICS_ADDR") or "0.0.0.0"


def peak_flops(device_name: str) -> float | None:
    """Dense bf16 peak of a known GPU, for MFU; None elsewhere."""
    return next((v for k, v in PEAK_FLOPS.items() if k in device_name), None)


def mfu(
    tokens_per_second: float, flops_token: float, peak: float | None, world_size: int
) -> float | None:
    """MFU over the whole gang (kubetune_trainer.flops holds the formula); None without a peak."""
    if not peak:
        return None
    return flops.mfu(tokens_per_second, flops_token, peak * world_size)


class Metrics:
    """The trainer's gauges and counters, labelled with the job and rank."""

    def __init__(self, job: str, rank: int) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge

        self.registry = CollectorRegistry()
        labels = {"job": job, "rank": str(rank)}

        def gauge(name: str, doc: str) -> Any:
            return Gauge(
                f"kubetune_trainer_{name}", doc, list(labels), registry=self.registry
            ).labels(**labels)

        self.loss = gauge("loss", "Training loss of the last step.")
        self.eval_loss = gauge("eval_loss", "Latest evaluation loss.")
        self.learning_rate = gauge("learning_rate", "Current learning rate.")
        self.step = gauge("step", "Optimizer steps done.")
        self.tokens_per_second = gauge(
            "tokens_per_second", "Training tokens per second, all ranks."
        )
        self.samples_per_second = gauge(
            "samples_per_second", "Training sequences per second, all ranks."
        )
        self.grad_norm = gauge("grad_norm", "Global gradient norm before clipping.")
        self.device_memory = gauge(
            "device_memory_bytes", "Peak device memory allocated (GPU) or RSS (CPU)."
        )
        self.mfu = gauge("mfu", "Model FLOPs utilisation (GPUs with a known peak).")
        by_split = [*labels, "split"]  # train: the last step's pairs; eval: the last evaluation's

        def split_gauge(name: str, doc: str) -> Any:
            return Gauge(f"kubetune_trainer_{name}", doc, by_split, registry=self.registry)

        self.reward_chosen = split_gauge(
            "reward_chosen", "Preference tuning: mean implicit reward of the chosen responses."
        )
        self.reward_rejected = split_gauge(
            "reward_rejected", "Preference tuning: mean implicit reward of the rejected responses."
        )
        self.reward_margin = split_gauge(
            "reward_margin", "Preference tuning: mean chosen minus rejected reward."
        )
        self.preference_accuracy = split_gauge(
            "preference_accuracy",
            "Preference tuning: fraction of pairs whose chosen reward is higher.",
        )
        self.labels = labels
        self.tokens = Counter(
            "kubetune_trainer_tokens",
            "Training tokens seen by this rank.",
            list(labels),
            registry=self.registry,
        ).labels(**labels)

    def preference(self, split: str, summary: dict[str, float] | None) -> None:
        """Set the preference gauges of a split from a dpo summary (nothing before the first)."""
        if not summary:
            return
        for gauge, key in (
            (self.reward_chosen, "rewardChosen"),
            (self.reward_rejected, "rewardRejected"),
            (self.reward_margin, "rewardMargin"),
            (self.preference_accuracy, "accuracy"),
        ):
            gauge.labels(**self.labels, split=split).set(summary[key])

    def serve(self, port: int | None) -> None:
        """Start the HTTP endpoint (no-op without a port)."""
        if port is not None:
            from prometheus_client import start_http_server

            start_http_server(port, addr=metrics_address(), registry=self.registry)


def memory_bytes() -> int:
    """Peak GPU memory allocated, or this process's resident set size on CPU."""
    import torch

    if torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated())
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
