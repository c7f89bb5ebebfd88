"""Training throughput of the kubetune trainer against a plain DeepSpeed loop, on one GPU, in one run.

baseline: transformers' Llama with sdpa attention, wrapped by deepspeed.initialize, torch fused
AdamW, bf16, no packing (variable-length batches padded to their longest record, as HF's padding
collator does). ours: the trainer's own building blocks (method setup, DeepSpeed config
derivation, engine) with its throughput levers (kubetune_trainer.perf) at their defaults.
Micro-batch: the largest power of two that fits, for the baseline in the device's memory, for ours
in the baseline's peak memory. Models are random-init from Llama-3.2-1B / Llama-3.1-8B shapes.

    python bench/gpu_throughput.py --out DIR          # the GPU benchmark (~6 minutes on an H100)
    python bench/gpu_throughput.py --smoke --out DIR  # tiny shapes on CPU, to check the script
    python bench/gpu_throughput.py --out DIR --resume # only what DIR has no good result for yet

The configs short of their goal (PROFILED) also run a few steps under torch.profiler, and the
report says where their step time goes: kernel time by kind (matmul, attention, fused Triton,
elementwise, optimizer, copies) and how busy the GPU was, which tells the next lever to try.

Each (variant, group of configs) runs in its own process, baseline first, so that patched kernels
never leak into the baseline and ours can be held to the baseline's memory. Results are appended
to DIR/results.jsonl as they come and DIR/gpu_throughput.md is rewritten after every config.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script: bench._gpu lives beside this file
    sys.path.insert(0, str(REPO_ROOT))

from bench._gpu.report import load_results, pick, render, summary, write_report  # noqa: E402
from bench._gpu.runner import Runner  # noqa: E402
from bench._gpu.tasks import Plan, Result, Task, plan_for, tasks_for  # noqa: E402


def worker(spec_path: Path) -> int:
    """Run one variant's group of tasks in this process (spawned by the coordinator)."""
    spec = json.loads(spec_path.read_text())
    from kubetune_trainer import dist

    dist.setup()
    plan = Plan(**spec["plan"])
    out = Path(spec["out"])
    runner = Runner(spec["variant"], plan, out, spec["limits"], spec["deadline"])
    for t in spec["tasks"]:
        task = Task(**{**t, "perf": tuple(tuple(kv) for kv in t["perf"])})  # JSON gave lists
        if time.time() > spec["deadline"] - spec["min_left_s"]:
            result = Result(task.name, runner.variant, False, note="skipped: out of time")
        else:
            started = time.perf_counter()
            result = runner.run(task)
            print(summary(result, time.perf_counter() - started), flush=True)
        with (out / "results.jsonl").open("a") as f:
            f.write(json.dumps(asdict(result)) + "\n")
        write_report(out, runner.dev.name, plan.smoke)
    dist.cleanup()
    return 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def baseline_peaks(results: list[dict[str, Any]], tasks: list[Task]) -> dict[str, float]:
    """Peak bytes the baseline allocated per task: ours must fit its micro-batch under them."""
    limits = {}
    for t in tasks:
        b = pick(results, t.compare_to or t.name, "baseline")
        if b and b["ok"] and b["peak_alloc_gib"]:
            limits[t.name] = b["peak_alloc_gib"] * 2**30
    return limits


def spawn(variant: str, tasks: list[Task], plan: Plan, out: Path, deadline: float) -> int:
    """One worker process for a variant's group of tasks; returns its exit code."""
    spec = {
        "variant": variant,
        "tasks": [asdict(t) for t in tasks],
        "plan": asdict(plan),
        "out": str(out),
        "deadline": deadline,
        "min_left_s": 8 if plan.smoke else 30,
        "limits": baseline_peaks(load_results(out / "results.jsonl"), tasks),
    }
    spec_path = out / f"spec-{variant}-{tasks[0].name.replace(' ', '_')}.json"
    spec_path.write_text(json.dumps(spec))
    env = dict(
        os.environ,
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(free_port()),
        RANK="0",
        LOCAL_RANK="0",
        WORLD_SIZE="1",
    )
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(spec_path)]
    try:
        return subprocess.run(
            cmd, env=env, timeout=max(5.0, deadline - time.time() + 15)
        ).returncode
    except subprocess.TimeoutExpired:
        print(f"{variant} worker for {tasks[0].name} ran out of time", flush=True)
        return 124
    finally:
        spec_path.unlink(missing_ok=True)


def pending(tasks: list[Task], variant: str, results: list[dict[str, Any]]) -> list[Task]:
    """The tasks still without a good result for this variant (all of them on a fresh run)."""
    return [t for t in tasks if not (pick(results, t.name, variant) or {}).get("ok")]


def coordinate(smoke: bool, out: Path, budget_s: float, resume: bool = False) -> int:
    """Baseline then ours for each group, most important group first, within the time budget.

    resume keeps the results already in out and runs only what has no good result yet, so a
    second short GPU call finishes what the first ran out of time for.
    """
    out.mkdir(parents=True, exist_ok=True)
    if not resume:
        (out / "results.jsonl").unlink(missing_ok=True)
    plan = plan_for(smoke)
    deadline = time.time() + budget_s
    codes = []
    for group in tasks_for(smoke):
        variants = ("ours",) if all(t.compare_to for t in group) else ("baseline", "ours")
        for variant in variants:
            todo = pending(group, variant, load_results(out / "results.jsonl"))
            if not todo:
                continue
            if time.time() > deadline - (5 if smoke else 30):
                print(f"skipping {variant} {todo[0].name}: out of time", flush=True)
                continue
            codes.append(spawn(variant, todo, plan, out, deadline))
    results = load_results(out / "results.jsonl")
    device = device_name()
    (out / "gpu_throughput.md").write_text(render(results, device, smoke))
    print((out / "gpu_throughput.md").read_text(), flush=True)
    latest = [pick(results, r["task"], r["variant"]) or r for r in results]
    return 0 if all(c == 0 for c in codes) and all(r["ok"] for r in latest) else 1


def device_name() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--smoke", action="store_true", help="tiny shapes, 2 steps, for CPU checks")
    p.add_argument("--out", default=os.environ.get("OUT", "bench/results"), help="results folder")
    p.add_argument("--budget-s", type=float, default=400.0, help="seconds for the whole benchmark")
    p.add_argument(
        "--resume", action="store_true", help="keep the results in --out; run only what is missing"
    )
    p.add_argument("--worker", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        return worker(Path(a.worker))
    return coordinate(a.smoke, Path(a.out), a.budget_s, a.resume)


if __name__ == "__main__":
    sys.exit(main())
