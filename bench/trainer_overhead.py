"""Step time of the kubetune trainer relative to a bare, hand-written DeepSpeed loop.

Both run in this invocation on the same tiny Llama, the same LoRA adapter, the same packed
batches and the same DeepSpeed ZeRO-3 settings, 2 ranks under torchrun on 127.0.0.1. The
ratio compares median step times (everything between two step ends), so start-up and the
final eval/export do not count. Goal: <= 1.05.

    python bench/trainer_overhead.py [--steps 60] [--stage 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MICRO, SEQ, LR = 8, 64, 3e-3
LORA = {"lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.0}


def baseline_worker(base: str, train: str, steps: int, stage: int, out: str) -> None:
    """The bare loop (runs once per rank under torchrun): initialize, forward, backward, step."""
    import deepspeed
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kubetune_trainer import data
    from kubetune_trainer.config import DataConfig

    deepspeed.init_distributed(dist_backend="gloo")
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    tok = AutoTokenizer.from_pretrained(base)
    seqs = data.build_dataset(
        tok, DataConfig(train=train, max_seq_length=SEQ), 42, Path(out).parent
    ).train
    config = {
        "train_micro_batch_size_per_gpu": MICRO,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": 1.0,
        "zero_optimization": {"stage": stage},
        "optimizer": {"type": "AdamW", "params": {"lr": LR, "torch_adam": True}},
        "steps_per_print": 10**9,
    }
    if stage == 3:
        # As documented for ZeRO-3 with transformers (and as the trainer does): partition while
        # loading. Without it every tensor of this tiny model is under DeepSpeed's persistence
        # threshold and stays whole on each rank, which would not be ZeRO-3 in any real sense.
        from transformers.integrations import HfDeepSpeedConfig

        hook = HfDeepSpeedConfig(config)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    if stage == 3:
        del hook
    torch.manual_seed(42)
    model = get_peft_model(
        model,
        LoraConfig(
            r=16,
            lora_alpha=32,
            lora_dropout=0.0,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        ),
    )
    engine, *_ = deepspeed.initialize(
        model=model,
        model_parameters=[p for p in model.parameters() if p.requires_grad],
        config=config,
    )
    ends = []
    for step in range(steps):
        idx = data.micro_batch_indices(len(seqs), MICRO, rank, world, 42, step)
        batch = {k: v.to(engine.device) for k, v in data.collate([seqs[i] for i in idx]).items()}
        loss = engine(**batch).loss
        engine.backward(loss)
        engine.step()
        ends.append(time.perf_counter())
    if rank == 0:
        Path(out).write_text(json.dumps({"ends": ends}))


def torchrun(args: list[str], env: dict[str, str]) -> float:
    """Run a 2-rank torchrun command; returns its wall time."""
    started = time.monotonic()
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        *args,
    ]
    done = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(args[:2])} failed:\n{done.stdout[-3000:]}")
    return time.monotonic() - started


def median_gap(ends: list[float], skip: int = 3) -> float:
    gaps = sorted(b - a for a, b in zip(ends[skip:], ends[skip + 1 :], strict=False))
    return gaps[len(gaps) // 2]


def trainer_config(work: Path, base: Path, train: Path, steps: int, stage: int) -> dict[str, Any]:
    return {
        "job": {"name": "bench"},
        "model": {"source": f"file://{base}", "dtype": "float32"},
        "data": {"train": str(train), "max_seq_length": SEQ},
        "method": {"type": "lora", **LORA},
        "training": {"max_steps": steps, "learning_rate": LR, "micro_batch_size": MICRO, "global_batch_size": 2 * MICRO,
                     "warmup_ratio": 0.0, "scheduler": "constant", "seed": 42, "precision": "fp32"},
        "deepspeed": {"zero_stage": stage},
        "checkpoint": {"local_dir": str(work / "local")},
        "output": {"uri": f"file://{work / 'out'}", "format": "adapter"},
        "reporting": {"progress_file": str(work / "progress.jsonl")},
    }  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--stage", type=int, default=3)
    p.add_argument(
        "--baseline-worker", nargs=3, metavar=("BASE", "TRAIN", "OUT"), help=argparse.SUPPRESS
    )
    a = p.parse_args()
    if a.baseline_worker:
        baseline_worker(
            a.baseline_worker[0], a.baseline_worker[1], a.steps, a.stage, a.baseline_worker[2]
        )
        return 0

    from kubetune_trainer import tiny

    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    env.setdefault(
        "TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "kubetune" / "torch_extensions")
    )
    with tempfile.TemporaryDirectory(prefix="kubetune-bench-") as tmp:
        work = Path(tmp)
        base = tiny.make_tiny_model(work / "base", pretrain_steps=150)
        train = tiny.write_jsonl(work / "train.jsonl", tiny.synthetic_records(512, "B", seed=1))
        out = work / "baseline.json"
        bare_wall = torchrun(
            [
                __file__,
                "--steps",
                str(a.steps),
                "--stage",
                str(a.stage),
                "--baseline-worker",
                str(base),
                str(train),
                str(out),
            ],
            env,
        )
        bare = median_gap(json.loads(out.read_text())["ends"])
        cfg = work / "trainer.json"
        cfg.write_text(json.dumps(trainer_config(work, base, train, a.steps, a.stage)))
        ours_wall = torchrun(["-m", "kubetune_trainer", "--config", str(cfg)], env)
        card = json.loads((work / "out" / "kubetune_run.json").read_text())
        ours = card["training"]["median_loop_seconds_per_step"]
    print(f"ZeRO-{a.stage} LoRA, 2 ranks, {a.steps} steps, micro-batch {MICRO} x {SEQ} tokens")
    print(f"bare DeepSpeed loop: {bare * 1000:.1f} ms/step (process wall {bare_wall:.1f} s)")
    print(
        f"kubetune trainer:    {ours * 1000:.1f} ms/step (process wall {ours_wall:.1f} s, incl. eval+export)"
    )
    print(f"ratio: {ours / bare:.3f} (goal <= 1.05)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
