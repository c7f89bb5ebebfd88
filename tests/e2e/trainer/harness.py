"""Launch the real trainer under torchrun (2 ranks on 127.0.0.1) and read what it left behind."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import eventually
from kubetune_trainer import tiny
from kubetune_trainer.checkpoint.seal import Seal

LOGIT_ATOL = 1e-4  # fp32 export and reload of the same weights; only op order may differ
EXTENSIONS_DIR = Path.home() / ".cache" / "kubetune" / "torch_extensions"
# The namespace's checkpoint key, as the operator's Secret gives it to every worker.
CHECKPOINT_KEY = "kubetune-test-checkpoint-key"
CLI = [sys.executable, "-m", "kubetune_trainer.launch"]


@dataclass
class Run:
    """A finished trainer run."""

    code: int
    wall: float
    log: str
    workdir: Path

    def card(self) -> dict[str, Any]:
        """The run card of a local (file://) export."""
        return dict(json.loads((self.workdir / "out" / "kubetune_run.json").read_text()))

    def progress(self) -> list[dict[str, Any]]:
        """The JSON-lines progress events."""
        path = self.workdir / "progress.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def seal_of(workdir: Path) -> Seal:
    """What signs the checkpoints of the run in `workdir` (job name = folder name)."""
    return Seal(CHECKPOINT_KEY.encode(), f"default/{workdir.name}")


def make_data(folder: Path) -> tuple[Path, Path]:
    """Task-B train (512) and validation (64) files, prompt-completion form."""
    train = tiny.write_jsonl(folder / "train.jsonl", tiny.synthetic_records(512, "B", seed=1))
    val = tiny.write_jsonl(folder / "val.jsonl", tiny.synthetic_records(64, "B", seed=2))
    return train, val


def config(
    workdir: Path, base: Path, data: tuple[Path, Path], **sections: dict[str, Any]
) -> dict[str, Any]:
    """A TrainerConfig dict for a small 2-rank CPU run; sections override parts of it."""
    cfg: dict[str, Any] = {
        "job": {"name": workdir.name},
        "model": {"source": f"file://{base}", "dtype": "float32"},
        "data": {"train": str(data[0]), "validation": str(data[1]), "max_seq_length": 64},
        "method": {"type": "full"},
        "training": {"max_steps": 40, "learning_rate": 1e-3, "micro_batch_size": 8, "global_batch_size": 16,
                     "eval_every_steps": 20, "warmup_ratio": 0.1, "precision": "fp32"},
        "deepspeed": {"zero_stage": 2},
        "checkpoint": {"local_dir": str(workdir / "local")},
        "output": {"uri": f"file://{workdir / 'out'}", "format": "merged"},
        "reporting": {"progress_file": str(workdir / "progress.jsonl")},
    }  # fmt: skip
    for name, values in sections.items():
        cfg[name] = {**cfg.get(name, {}), **values}
    return cfg


def env_for(workdir: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a pod would give the trainer, plus the op cache and the export probe."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_"))
    }
    env.update(
        NPROC_PER_NODE="2",
        TORCH_EXTENSIONS_DIR=str(EXTENSIONS_DIR),
        DS_ACCELERATOR="cpu",
        OMP_NUM_THREADS="1",
        KUBETUNE_EXPORT_PROBE=str(workdir / "probe.safetensors"),
        KUBETUNE_CHECKPOINT_KEY=CHECKPOINT_KEY,
        NO_PROXY="127.0.0.1,localhost",
    )
    env.update(extra or {})
    return env


def start(
    workdir: Path, cfg: dict[str, Any], env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """Start the launcher (torchrun, 2 ranks) in its own session; output goes to workdir/log."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "trainer.json"
    path.write_text(json.dumps(cfg))
    log = (workdir / "log").open("w")
    return subprocess.Popen(
        [*CLI, "--config", str(path)], env=env_for(workdir, env), stdout=log, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip


def kill_group(proc: subprocess.Popen[str], sig: int = signal.SIGKILL) -> None:
    """Signal the launcher and every descendant: torchrun starts ranks in sessions of their own,
    so killing only the launcher's group would leave them training (a pod kill takes them all)."""
    import psutil

    try:
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    for p in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.send_signal(sig)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def finish(proc: subprocess.Popen[str], workdir: Path, started: float, timeout: float = 240) -> Run:
    """Wait for a started run (killing its group on timeout) and collect it."""
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        proc.wait()
        raise AssertionError(
            f"trainer did not finish in {timeout}s:\n{(workdir / 'log').read_text()[-3000:]}"
        ) from None
    finally:
        kill_group(proc)  # leave no stray rank behind
    return Run(code, time.monotonic() - started, (workdir / "log").read_text(), workdir)


def launch(
    workdir: Path, cfg: dict[str, Any], env: dict[str, str] | None = None, timeout: float = 240
) -> Run:
    """Run the trainer to completion."""
    started = time.monotonic()
    return finish(start(workdir, cfg, env), workdir, started, timeout)


def wait_for(predicate: Any, timeout: float, what: str, poll: float = 0.05) -> None:
    """Poll until predicate() is true (the shared poll-until helper, polling faster: trainer
    steps take a fraction of a second)."""
    eventually(predicate, timeout, what, poll=poll)


def reload_logits(folder: Path, input_ids: Any, adapter: Path | None = None) -> Any:
    """Logits of an exported model loaded with transformers (and peft for an adapter)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    model.eval()
    with torch.no_grad():
        return model(input_ids=input_ids).logits.float()


def probe_at(workdir: Path, step: int | None = None) -> dict[str, Any]:
    """The engine's logits on the probe input: at the end, or at the checkpoint of `step`."""
    from safetensors.torch import load_file

    name = "probe.safetensors" if step is None else f"probe-step-{step:08d}.safetensors"
    return dict(load_file(workdir / name))


def kubetune_export(
    checkpoint: str, out: Path, env: dict[str, str] | None = None, *args: str
) -> subprocess.CompletedProcess[str]:
    """`kubetune export CHECKPOINT OUT [args]`, as a user runs it."""
    cmd = [sys.executable, "-m", "kubetune_operator.cli", "export", checkpoint, str(out), *args]
    env = {**os.environ, "KUBETUNE_CHECKPOINT_KEY": CHECKPOINT_KEY, **(env or {})}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
