"""Measuring one variant's tasks in this process: micro-batch probing, timed steps, profiles."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench._gpu.batches import Documents, fill, packed_batch, padded_batch, random_rows
from bench._gpu.engines import baseline_engine, collect, count_params, ours_engine, release
from bench._gpu.stats import largest_power_of_two, mfu, real_tokens, time_breakdown
from bench._gpu.tasks import PROFILED, SHAPES, Plan, Result, Task
from kubetune_trainer.flops import flops_per_token


class Device:
    """Memory readings and synchronisation that work on CUDA and, trivially, on CPU."""

    def __init__(self) -> None:
        import torch

        self.torch = torch
        self.cuda = torch.cuda.is_available()
        self.name = torch.cuda.get_device_name() if self.cuda else "cpu"
        self.total = torch.cuda.get_device_properties(0).total_memory if self.cuda else 0

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def reset_peak(self) -> None:
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats()

    def peak(self) -> tuple[int, int]:
        """(max allocated, max reserved) bytes since the last reset."""
        if not self.cuda:
            return 0, 0
        return self.torch.cuda.max_memory_allocated(), self.torch.cuda.max_memory_reserved()


def is_oom(e: BaseException) -> bool:
    """Whether an exception is the device running out of memory."""
    return "out of memory" in str(e).lower() or type(e).__name__ == "OutOfMemoryError"


def to_device(batch: dict[str, Any], device: Any) -> dict[str, Any]:
    """Tensors to the device (non-blocking); plain numbers stay."""
    return {k: v.to(device, non_blocking=True) if hasattr(v, "to") else v for k, v in batch.items()}


def train_step(engine: Any, batch: dict[str, Any]) -> Any:
    """forward, backward, optimizer step; returns the loss tensor (no host sync)."""
    loss = engine(**to_device(batch, engine.device)).loss
    engine.backward(loss)
    engine.step()
    return loss.detach()


class Runner:
    """Runs one variant's tasks in this process and records the results."""

    def __init__(
        self, variant: str, plan: Plan, out: Path, limits: dict[str, float], deadline: float
    ) -> None:
        self.variant, self.plan, self.out, self.limits, self.deadline = (
            variant,
            plan,
            out,
            limits,
            deadline,
        )
        self.dev = Device()
        self.precision = "bf16" if self.dev.cuda else "fp32"
        self.micro: dict[str, int] = {}

    # batches ------------------------------------------------------------------------------------------
    def fixed_batch(self, task: Task, rows: int, seed: int, vocab: int) -> dict[str, Any]:
        """Full-length rows; ours feeds them as packed rows (one record each), as the trainer does."""
        import torch

        ids = random_rows(rows, task.seq, vocab, seed)
        if self.variant == "baseline":
            return {"input_ids": ids, "labels": ids.clone()}
        positions = torch.arange(task.seq).expand(rows, -1).contiguous()
        labels = ids.clone()
        labels[:, 0] = -100
        return self.ours_inputs({"input_ids": ids, "labels": labels, "position_ids": positions})

    def ours_inputs(self, batch: dict[str, Any]) -> dict[str, Any]:
        from kubetune_trainer import perf

        return perf.varlen_inputs(batch) if self.levers.get("varlen_attention") else batch

    # engine lifecycle -----------------------------------------------------------------------------------
    def build(self, task: Task) -> Any:
        factory = baseline_engine if self.variant == "baseline" else ours_engine
        engine, self.levers = factory(task, self.precision, self.dev.cuda, self.plan.lr)
        engine.train()
        return engine

    def memory_limit(self, task: Task) -> float:
        """Device memory the micro-batch may use: a share of the card, and for ours the baseline's peak."""
        if not self.dev.cuda:
            return float("inf")
        limit = self.dev.total * self.plan.memory_fraction
        return min(limit, self.limits.get(task.name, limit))

    def probe(self, engine: Any, task: Task, vocab: int) -> int:
        """Largest power-of-two micro-batch predicted to fit: peak memory at 1 and 2 rows, extrapolated."""
        if not self.dev.cuda:
            return self.plan.max_micro
        for seed in (1, 2):
            train_step(engine, self.fixed_batch(task, 1, seed, vocab))
        peaks = []
        for rows in (1, 2):
            self.dev.sync()
            self.dev.reset_peak()
            train_step(engine, self.fixed_batch(task, rows, 10 + rows, vocab))
            self.dev.sync()
            peaks.append(self.dev.peak()[0])
        per_row = max(peaks[1] - peaks[0], 1)
        return largest_power_of_two(
            self.memory_limit(task), peaks[0] - per_row, per_row, self.plan.max_micro
        )

    def timed(
        self, engine: Any, make: Callable[[int], dict[str, Any]], steps: int
    ) -> tuple[float, list[float], tuple[int, int], list[dict[str, Any]]]:
        """Warm-up, then `steps` timed steps on prepared batches; (seconds, losses, peaks, batches)."""
        for i in range(self.plan.warmup):
            train_step(engine, make(100 + i))
        batches = [make(1000 + i) for i in range(steps)]
        self.dev.sync()
        self.dev.reset_peak()
        start = time.perf_counter()
        losses = [train_step(engine, b) for b in batches]
        self.dev.sync()
        seconds = time.perf_counter() - start
        return seconds, [float(x) for x in losses], self.dev.peak(), batches

    def profile(self, engine: Any, make: Callable[[int], dict[str, Any]]) -> dict[str, Any]:
        """A few steps under torch.profiler: where the step time goes (never fails the result)."""
        steps = self.plan.profile_steps
        try:
            from torch.autograd import DeviceType
            from torch.profiler import ProfilerActivity
            from torch.profiler import profile as torch_profile

            batches = [make(2000 + i) for i in range(steps)]
            activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.dev.cuda else [])
            self.dev.sync()
            with torch_profile(activities=activities) as prof:
                start = time.perf_counter()
                for b in batches:
                    train_step(engine, b)
                self.dev.sync()
                wall = time.perf_counter() - start
            rows = prof.key_averages()
            if self.dev.cuda:
                kernels = [
                    (e.key, e.self_device_time_total / 1e6, e.count)
                    for e in rows
                    if e.device_type != DeviceType.CPU
                ]
            else:
                kernels = [(e.key, e.self_cpu_time_total / 1e6, e.count) for e in rows]
            if not kernels:
                return {"note": "the profiler recorded no kernels"}
            return time_breakdown(kernels, wall, steps)
        except Exception as e:  # the throughput numbers stand without it
            return {"note": f"profile failed: {type(e).__name__}: {str(e)[:200]}"}

    def finish(self, r: Result, engine: Any) -> Result:
        r.params, r.trainable = count_params(engine.module)
        r.levers = self.levers
        return r

    # tasks -------------------------------------------------------------------------------------------------
    def run_fixed(self, task: Task) -> Result:
        """Tokens/s, MFU and peak memory on full-length random rows at the largest fitting micro-batch."""
        cfg = SHAPES[task.shape]
        engine = self.build(task)
        micro = self.probe(engine, task, cfg["vocab_size"])
        while True:

            def make(seed: int, rows: int = micro) -> dict[str, Any]:
                return self.fixed_batch(task, rows, seed, cfg["vocab_size"])

            try:
                seconds, losses, (alloc, reserved), _ = self.timed(engine, make, self.plan.steps)
                break
            except RuntimeError as e:
                if not is_oom(e) or micro == 1:
                    raise
            print(f"{self.variant} {task.name}: micro-batch {micro} ran out of memory", flush=True)
            release(engine)
            engine, micro = None, micro // 2
            collect()
            engine = self.build(task)
        self.micro[task.name] = micro
        tps = micro * task.seq * self.plan.steps / seconds
        r = self.finish(Result(task.name, self.variant, True, micro_batch=micro, tokens_per_s=tps, real_tokens_per_s=tps,
                               peak_alloc_gib=alloc / 2**30, peak_reserved_gib=reserved / 2**30,
                               step_s=seconds / self.plan.steps, losses=losses), engine)  # fmt: skip
        r.mfu = mfu(
            tps,
            flops_per_token(
                r.params,
                r.trainable,
                cfg["num_hidden_layers"],
                cfg["hidden_size"],
                task.seq,
                task.method,
            ),
        )
        if task.name in PROFILED and self.plan.profile_steps:
            r.profile = self.profile(engine, make)
        release(engine)
        return r

    def run_varlen(self, task: Task) -> Result:
        """Real (non-padding) tokens/s on log-normal records: baseline pads per batch, ours packs."""
        cfg = SHAPES[task.shape]
        micro = self.micro.get(task.micro_from or "", 0)
        engine = self.build(task)
        if not micro:
            micro = self.probe(engine, task, cfg["vocab_size"])
        docs = Documents(cfg["vocab_size"], task.seq, seed=5, smoke=self.plan.smoke)

        def make(_: int) -> dict[str, Any]:
            if self.variant == "baseline":
                return padded_batch([docs.take() for _ in range(micro)])
            return self.ours_inputs(packed_batch(fill(docs, micro * task.seq), micro * task.seq))

        seconds, losses, (alloc, reserved), batches = self.timed(engine, make, self.plan.steps)
        real_timed = sum(real_tokens(b) for b in batches)
        all_timed = sum(int(b["input_ids"].numel()) for b in batches)
        r = self.finish(Result(task.name, self.variant, True, micro_batch=micro, tokens_per_s=all_timed / seconds,
                               real_tokens_per_s=real_timed / seconds, peak_alloc_gib=alloc / 2**30,
                               peak_reserved_gib=reserved / 2**30, step_s=seconds / self.plan.steps,
                               pad_fraction=1 - real_timed / all_timed, losses=losses), engine)  # fmt: skip
        release(engine)
        return r

    def run_parity(self, task: Task) -> Result:
        """Losses of the first steps on the same records: baseline padded, ours packed into one row."""
        cfg = SHAPES[task.shape]
        engine = self.build(task)
        docs = Documents(cfg["vocab_size"], task.seq, seed=11, smoke=self.plan.smoke)
        losses: list[float] = []
        started = time.perf_counter()
        for _ in range(self.plan.parity_steps):
            group = [docs.take() for _ in range(self.plan.parity_docs)]
            if self.variant == "baseline":
                batch = padded_batch(group)
            else:
                width = sum(len(d) for d in group)
                batch = self.ours_inputs(packed_batch(group, width + (-width) % 8))
            losses.append(float(train_step(engine, batch)))
            if time.time() > self.deadline - 20:
                break
        r = self.finish(Result(task.name, self.variant, True, losses=losses,
                               step_s=(time.perf_counter() - started) / max(1, len(losses))), engine)  # fmt: skip
        release(engine)
        return r

    def run(self, task: Task) -> Result:
        """One task, its failure recorded rather than raised, so the remaining tasks still run."""
        fn = {"fixed": self.run_fixed, "varlen": self.run_varlen, "parity": self.run_parity}[
            task.kind
        ]
        held = self.dev.torch.cuda.memory_allocated() / 2**30 if self.dev.cuda else 0.0
        try:
            result = fn(task)
        except Exception as e:
            import traceback

            traceback.print_exc()
            result = Result(
                task.name, self.variant, False, note=f"{type(e).__name__}: {str(e)[:300]}"
            )
        collect()
        if held > 0.5:
            result.note += f" (started with {held:.1f} GiB still allocated)"
        return result
