"""The trainer as one object: setup(); loop.run(); finish(). Each method is one stage of a run."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
import signal
from pathlib import Path
from typing import Any

from . import adapter as adapter_mod
from . import benchmark as benchmark_mod
from . import best as best_mod
from . import checkpoint_export, gpu_oom, loop, tracking
from . import data as data_mod
from . import dpo as dpo_mod
from . import engine as engine_mod
from . import export as export_mod
from . import model as model_mod
from . import perf as perf_mod
from .build import build_engine
from .checkpoint.listing import best_evaluated
from .checkpoint.manager import CheckpointManager, Restored
from .checkpoint.manifest import reads_every_shard, tag_for
from .checkpoint.schedule import SaveSchedule
from .checkpoint.seal import Seal
from .checkpoint.seal import from_env as seal_from_env
from .config import TrainerConfig
from .dist import DistEnv
from .flops import flops_per_token
from .metrics import Metrics, memory_bytes, metrics_port, mfu, peak_flops
from .model_card import write_model_card
from .preference import check_objective
from .progress import ConsoleSink, FileSink, KubernetesSink, Progress, Sink
from .redact import redact, redacted_spec
from .storage import join

log = logging.getLogger("kubetune_trainer")


def total_steps(cfg: TrainerConfig, micro_per_epoch: int, accumulation: int) -> int:
    """max_steps, or epochs worth of optimizer steps (at least 1)."""
    if cfg.training.max_steps:
        return cfg.training.max_steps
    epochs = cfg.training.epochs or 1.0
    return max(1, math.floor(epochs * micro_per_epoch / accumulation))


def job_key(cfg: TrainerConfig) -> str:
    """A short stable name for local staging folders of this job."""
    return hashlib.sha256(f"{cfg.job.namespace}/{cfg.job.name}/{cfg.job.uid}".encode()).hexdigest()[
        :12
    ]


def checkpoint_seal(cfg: TrainerConfig) -> Seal:
    """What signs and verifies this job's checkpoints: the namespace's key from the env (bad
    input when checkpoints are on and it is missing) and the job's namespace/name."""
    job = f"{cfg.job.namespace}/{cfg.job.name}"
    return seal_from_env(job) if cfg.checkpoint.uri else Seal(b"", job)


def median_step(ends: list[float], skip: int = 3) -> float | None:
    """Median wall time between step ends (everything the loop does), after a few warm-up steps."""
    gaps = sorted(b - a for a, b in zip(ends[skip:], ends[skip + 1 :], strict=False))
    return gaps[len(gaps) // 2] if gaps else None


class Trainer:
    """One rank of a run: its inputs, engine, checkpoints and reporting.

    The state is declared here and filled by setup() in this order; the loop (loop.run) drives
    it through the methods of loop.Trainable, finish() writes what the run leaves behind.
    """

    cfg: TrainerConfig
    env: DistEnv
    stop_requested: bool
    """SIGTERM arrived on this rank: save and stop at the next step (all ranks agree first)."""
    # inputs
    precision: str
    """fp32, bf16 or fp16, as training.precision and the device allow."""
    read_as: str
    """The dtype the weights are read in (model.load_dtype)."""
    source: model_mod.Fetched
    """The model source on disk: the base model's folder, and an adapter's when it is one."""
    location: str
    """Local folder of the base model (fetched from its source)."""
    model_commit: str | None
    hub: dict[str, Any]
    tokenizer: Any
    data: data_mod.Dataset
    benchmark: benchmark_mod.Benchmark | None
    """spec.benchmark's records, scored on the starting and the exported weights."""
    benchmark_result: dict[str, Any] | None
    """status.benchmark once the exported weights are scored."""
    # how long
    accumulation: int
    micro_per_epoch: int
    total_steps: int
    # the engine (build.build_engine)
    levers: perf_mod.Levers
    ds_config: dict[str, Any]
    perf_applied: dict[str, bool]
    engine: Any
    exclude_frozen: bool
    """Frozen weights (every method but full) stay out of checkpoints."""
    local_params: int
    total_params: int
    flops_token: float
    # checkpoints
    ckpt: CheckpointManager
    schedule: SaveSchedule
    restored: Restored | None
    best: best_mod.BestWeights
    """The weights of the best evaluation so far (kept with early stopping, to be exported)."""
    export_step: int | None
    """The step whose weights the export holds, once the final report chose it."""
    export_from: str
    """Where the exported weights are: engine (the last, or the best kept ones) or checkpoint
    (the committed checkpoint of the best evaluation, with output.select best)."""
    start_step: int
    start_tokens: int
    # objective
    dpo: dpo_mod.Dpo | None
    """Preference tuning (objective dpo): its loss, reference and metrics; None for sft."""
    # reporting
    results: tracking.Results
    """Rank 0's trackers (MLflow, TensorBoard, W&B), events and registries."""
    metrics: Metrics
    sink: Sink | None

    def __init__(self, cfg: TrainerConfig, env: DistEnv) -> None:
        self.cfg, self.env = cfg, env
        self.stop_requested = False
        self.restored = None
        self.export_step = None
        self.dpo = None
        self.export_from = "engine"
        self.benchmark_result = None
        self._zero3_hook: Any = None  # HfDeepSpeedConfig, referenced while ZeRO-3 loads

    # -- setup -----------------------------------------------------------------------------
    def setup(self) -> loop.LoopState:
        """Inputs, engine, checkpoints (resume), reporting; returns the state the loop starts at."""
        import torch

        torch.manual_seed(self.cfg.training.seed)
        self.results = tracking.Results.open(
            self.cfg,
            self.env.is_main,
            Path(self.cfg.checkpoint.local_dir) / job_key(self.cfg) / "tracking",
        )
        self.load_inputs()
        self.build()
        state = self.resume()
        self.start_reporting()
        signal.signal(signal.SIGTERM, self._on_sigterm)
        self.engine.train()
        return state

    def cache(self) -> Path:
        """This rank's local folder for downloaded inputs."""
        return (
            Path(self.cfg.checkpoint.local_dir)
            / job_key(self.cfg)
            / f"rank-{self.env.rank:05d}"
            / "inputs"
        )

    def load_inputs(self) -> None:
        """Precision, the base model's files, tokenizer and data, and how many steps they make."""
        import torch

        cfg, env = self.cfg, self.env
        cuda = torch.cuda.is_available()
        self.precision = engine_mod.resolve_precision(
            cfg.training.precision, cuda, cuda and torch.cuda.is_bf16_supported()
        )
        self.read_as = model_mod.load_dtype(cfg.model.dtype, self.precision)
        with self.results.model_download(cfg.model.source):
            self.source = model_mod.fetch_source(cfg.model, self.cache())
        self.location, self.model_commit = self.source.location, self.source.commit
        if self.source.adapter and cfg.method.type in ("lora", "qlora"):
            adapter_mod.check_shape(Path(self.source.adapter), cfg.spec)
        self.hub = model_mod.hub_kwargs(cfg.model.source, cfg.model.revision)
        self.tokenizer = model_mod.load_tokenizer(
            adapter_mod.tokenizer_folder(self.source.adapter, self.location), self.hub
        )
        self.data = data_mod.build_dataset(
            self.tokenizer, cfg.data, cfg.training.seed, self.cache()
        )
        check_objective(cfg.method.objective, self.data.format)
        self.benchmark = (
            benchmark_mod.load(self.tokenizer, cfg.benchmark, cfg.data, self.cache())
            if cfg.benchmark
            else None
        )
        self.accumulation = engine_mod.accumulation_steps(cfg.training, env.world_size)
        self.micro_per_epoch = data_mod.micro_batches_per_epoch(
            len(self.data.train), cfg.training.micro_batch_size, env.world_size
        )
        self.total_steps = total_steps(cfg, self.micro_per_epoch, self.accumulation)

    def build(self) -> None:
        """The engine, in the one build order (build.build_engine) the GPU benchmark uses too."""
        import torch

        cuda = torch.cuda.is_available()
        built = build_engine(
            self.cfg,
            self.env.world_size,
            self.precision,
            cuda,
            self.load_model,
            self.total_steps,
            self.source.adapter,
        )
        self.levers, self.ds_config, self.engine = built.levers, built.ds_config, built.engine
        self.perf_applied = built.applied
        log.info("perf levers %s, applied %s", self.levers, self.perf_applied)
        self.exclude_frozen = self.cfg.method.type != "full"
        self.local_params, self.total_params = engine_mod.local_param_share(self.engine)
        self.flops_token = self.model_flops_per_token()

    def load_model(self, ds_config: dict[str, Any]) -> Any:
        """The base model in the training dtype; under ZeRO-3 partitioned while it loads (not
        when an adapter source is merged into it: that needs the whole weights)."""
        import torch

        cfg = self.cfg
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[
            self.precision
        ]
        merges = self.source.adapter is not None and cfg.method.type in ("full", "partial")
        if cfg.deepspeed.zero_stage == 3 and cfg.method.type != "qlora" and not merges:
            from transformers.integrations import HfDeepSpeedConfig

            self._zero3_hook = HfDeepSpeedConfig(ds_config)  # from_pretrained partitions
        model = model_mod.load_model(
            self.location, cfg.model, cfg.method, self.hub, dtype, self.read_as
        )
        model_mod.unset_zero3_init()
        return model

    def resume(self) -> loop.LoopState:
        """Checkpoints of this run, and the state of the newest one every rank could read."""
        cfg, env = self.cfg, self.env
        # Shards are named by data-parallel rank; if that is not the global rank (model
        # parallelism through overrides), fetch them all rather than guess.
        every_shard = reads_every_shard(self.ds_config) or (
            getattr(self.engine, "dp_world_size", env.world_size) != env.world_size
        )
        self.ckpt = CheckpointManager(
            cfg.checkpoint,
            env.rank,
            env.world_size,
            job_key(cfg),
            checkpoint_seal(cfg),
            every_shard,
            self.exports_best,
        )
        self.ckpt.lineage = checkpoint_export.lineage(
            cfg, self.precision, self.model_commit, self.source.base, bool(self.source.adapter)
        )
        state = loop.LoopState()
        self.restored = (
            self.ckpt.restore(
                self.engine, self.all_true, self.exclude_frozen, (dpo_mod.REFERENCE_FILE,)
            )
            if self.ckpt.enabled
            else None
        )
        self.best = best_mod.BestWeights(
            self.ckpt.local,
            bool(cfg.training.early_stopping_patience)
            and (env.is_main or best_mod.is_partitioned(self.engine.module)),
        )
        self.dpo = self.preference_objective()
        if self.restored:
            cs = self.restored.client_state
            state.step = int(cs.get("step", self.restored.step))
            state.best_eval = cs.get("best_eval")
            state.best_step = cs.get("best_step")
            state.evals_without_improvement = int(cs.get("evals_without_improvement", 0))
            state.tokens = int(cs.get("tokens", 0))
            state.evals = [(int(step), float(loss)) for step, loss in cs.get("evals") or []]
            state.benchmark_before = cs.get("benchmark_before")
        self.start_step, self.start_tokens = state.step, state.tokens
        self.schedule = SaveSchedule(
            cfg.checkpoint,
            self.total_steps,
            keeps_clock=env.is_main,
            saves_best=self.selects_best and self.ckpt.enabled,
        )
        return state

    def preference_objective(self) -> dpo_mod.Dpo | None:
        """Under objective dpo, the pairs' loss and its reference, restored with the checkpoint
        or computed now (before the first step); None for sft."""
        cfg, env = self.cfg, self.env
        if cfg.method.objective != "dpo":
            return None
        dpo = dpo_mod.make(
            cfg,
            self.data,
            self.tokenizer,
            self.levers.varlen_attention,
            env.rank,
            env.world_size,
            continues_adapter=self.source.adapter is not None,
        )
        dpo.prepare(self.engine, self.restored.attachments if self.restored else None)
        return dpo

    def start_reporting(self) -> None:
        """Prometheus metrics on every rank; progress sinks and trackers on rank 0."""
        self.metrics = Metrics(self.cfg.job.name, self.env.rank)
        self.metrics.serve(metrics_port(self.cfg.reporting.metrics_port, self.env.local_rank))
        self.sink = self.make_sink()
        self.results.start(redact(self.cfg.model_dump(mode="json")), self.start_step)

    @property
    def selects_best(self) -> bool:
        """Whether the job exports its best checkpoint (output.select: best) rather than the last
        weights."""
        return self.cfg.output is not None and self.cfg.output.select == "best"

    @property
    def exports_best(self) -> bool:
        """Whether the best evaluation's weights are exported: output.select best, or early
        stopping (by then the last `patience` evaluations were worse)."""
        return self.selects_best or bool(self.cfg.training.early_stopping_patience)

    def best_due(self, s: loop.LoopState) -> bool:
        """Whether to checkpoint now because this step's evaluation became the best (the
        schedule decides; the eval loss is the same on every rank, so every rank agrees)."""
        evaluated = s.evals[-1][0] if s.evals else None
        return self.schedule.best_due(s.step, s.best_step, evaluated)

    def trained_tokens(self, s: loop.LoopState) -> int:
        """Training tokens over all ranks (every rank's micro-batches have the same shape)."""
        return s.tokens * self.env.world_size

    def trainable_params(self) -> int:
        """Elements that train (whole tensors, also when ZeRO-3 partitions them)."""
        return sum(
            p.ds_numel if hasattr(p, "ds_numel") else p.numel()
            for p in self.engine.module.parameters()
            if p.requires_grad
        )

    def model_flops_per_token(self) -> float:
        """FLOPs per training token of this model and method, as the GPU benchmark counts them."""
        c = self.engine.module.config
        return flops_per_token(
            self.total_params,
            self.trainable_params(),
            int(getattr(c, "num_hidden_layers", 0) or 0),
            int(getattr(c, "hidden_size", 0) or 0),
            self.cfg.data.max_seq_length,
            self.cfg.method.type,
        )

    def make_sink(self) -> Sink | None:
        """Rank 0 reports progress: the job's status in a cluster, a file and/or a bar locally."""
        if not self.env.is_main:
            return None
        r = self.cfg.reporting
        sinks: list[Sink] = []
        if r.progress_sink == "kubernetes":
            sinks.append(
                KubernetesSink(
                    self.cfg.job.name,
                    self.cfg.job.namespace,
                    r.progress_interval_seconds,
                    self.start_step,
                )
            )
        if r.progress_sink == "file" and r.progress_file:
            sinks.append(FileSink(r.progress_file, self.start_step))
        if r.console:
            sinks.append(ConsoleSink(self.start_step))
        from .progress import Fanout

        return Fanout(sinks) if sinks else None

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        self.stop_requested = True

    # -- collectives ---------------------------------------------------------------------------
    def all_sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over ranks."""
        import torch
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self.engine.device)
        dist.all_reduce(t)
        return [float(x) for x in t.tolist()]

    def all_true(self, ok: bool) -> bool:
        """True only if every rank says ok."""
        return self.all_sum([0.0 if ok else 1.0])[0] == 0.0

    def agree_on_signals(self, step: int) -> tuple[bool, bool]:
        """(stop, save now), the same on every rank: SIGTERM on any rank stops all of them, a
        checkpoint due on any rank (the schedule's minutes run on rank 0) is saved by all."""
        due = self.schedule.due(step)
        stop, save = self.all_sum([float(self.stop_requested), float(due)])
        return stop > 0, save > 0

    # -- steps ---------------------------------------------------------------------------------
    def train_step(self, step: int) -> tuple[float, int]:
        """One optimizer step (accumulation micro-batches); returns (mean loss over ranks, tokens)."""
        gpu_oom.injected_oom(step, self.env.rank)
        t = self.cfg.training
        losses, tokens = 0.0, 0
        for k in range(self.accumulation):
            idx = data_mod.micro_batch_indices(
                len(self.data.train),
                t.micro_batch_size,
                self.env.rank,
                self.env.world_size,
                t.seed,
                step * self.accumulation + k,
            )
            if self.dpo is not None:
                loss, n = self.dpo.micro_loss(self.engine, idx)
            else:
                loss, n = self.sft_loss(idx)
            self.engine.backward(loss)
            self.engine.step()
            losses += float(loss.detach())
            tokens += n
        if self.dpo is not None:
            self.dpo.end_step(self.all_sum)
        return losses / self.accumulation, tokens

    def sft_loss(self, idx: list[int]) -> tuple[Any, int]:
        """The model's own next-token loss of training sequences idx, and their tokens."""
        batch = data_mod.collate([self.data.train[i] for i in idx])
        if self.levers.varlen_attention:
            batch = perf_mod.varlen_inputs(batch)
        batch = {n: v.to(self.engine.device) if hasattr(v, "to") else v for n, v in batch.items()}
        return self.engine(**batch).loss, int(batch["input_ids"].numel())

    def eval_loss(self) -> float | None:
        """Token-weighted validation loss over all ranks (same number of forwards on each rank);
        under objective dpo, the mean preference loss over the validation pairs."""
        import torch

        if self.dpo is not None:
            return self.dpo.evaluate(self.engine, self.all_sum)
        val = self.data.validation
        if not val:
            return None
        micro = self.cfg.training.micro_batch_size
        mine = list(range(self.env.rank, len(val), self.env.world_size))
        batches = math.ceil(math.ceil(len(val) / self.env.world_size) / micro)
        total = count = 0.0
        self.engine.eval()
        with torch.no_grad():
            for b in range(batches):
                idx = mine[b * micro : (b + 1) * micro]
                weight = 1.0 if idx else 0.0
                batch = data_mod.collate([val[i] for i in (idx or [0])])
                ids, labels = (
                    batch["input_ids"].to(self.engine.device),
                    batch["labels"].to(self.engine.device),
                )
                positions = batch.get("position_ids")
                if positions is not None:
                    positions = positions.to(self.engine.device)
                logits = self.engine(input_ids=ids, position_ids=positions).logits.float()
                ce = torch.nn.functional.cross_entropy(
                    logits[:, :-1].reshape(-1, logits.size(-1)),
                    labels[:, 1:].reshape(-1),
                    ignore_index=data_mod.IGNORE,
                    reduction="sum",
                )
                total += weight * float(ce)
                count += weight * float((labels[:, 1:] != data_mod.IGNORE).sum())
        self.engine.train()
        total, count = self.all_sum([total, count])
        return total / count if count else None

    def score_benchmark(self) -> dict[str, float]:
        """spec.benchmark's scores of the weights as they are now (a collective)."""
        assert self.benchmark is not None
        return benchmark_mod.score(
            self.engine,
            self.benchmark,
            self.cfg.training.micro_batch_size,
            self.env.rank,
            self.env.world_size,
            self.all_sum,
        )

    def keep_best(self, step: int) -> None:
        """Keep the weights of a new best evaluation (with early stopping, they are exported)."""
        self.best.save(self.engine.module, step)

    def choose_export_step(self, s: loop.LoopState) -> int:
        """The step whose weights the export holds, the same on every rank (a collective).

        The last, unless early stopping or output.select: best asks for the best evaluation's.
        Those come from the copy early stopping keeps where every rank still has it (a restart
        in a fresh pod loses it), else from the committed checkpoint with the lowest eval loss
        (select: best saves one at each new best, and pruning spares it), else the last weights
        are exported and the log says why.
        """
        if not self.exports_best or s.best_step in (None, s.step):
            return s.step
        early = bool(self.cfg.training.early_stopping_patience)
        if early and self.all_true(not self.best.enabled or self.best.step() == s.best_step):
            return int(s.best_step or 0)
        self.ckpt.wait()  # a checkpoint of a new best may still be on its way
        mine = best_evaluated(self.listed(), (s.step, self.eval_at(s, s.step)))
        step = int(self.all_sum([float(mine if self.env.is_main else 0)])[0])
        if step != s.step:
            self.export_from = "checkpoint"
            return step
        if early:
            log.warning(
                "the weights of the best evaluation (step %s) were lost in a restart and no "
                "checkpoint holds them: exporting the last ones (step %d)",
                s.best_step,
                s.step,
            )
        return s.step

    def listed(self) -> list[dict[str, Any]]:
        """The committed checkpoints rank 0 last listed (status.checkpoints.committed)."""
        return list((self.ckpt.last_committed or {}).get("committed") or [])

    def eval_at(self, s: loop.LoopState, step: int) -> float | None:
        """The eval loss measured at a step, in this attempt or in a listed checkpoint."""
        here = dict(s.evals).get(step)
        if here is not None:
            return here
        return next((c.get("evalLoss") for c in self.listed() if c["step"] == step), None)

    def report(
        self, s: loop.LoopState, tokens: int, force: bool = False, final: bool = False
    ) -> None:
        """Metrics every step, progress at the configured interval; the final report also says
        which step's weights are exported (a collective: every rank makes it)."""
        if final:
            self.export_step = self.choose_export_step(s)
        m, step = self.metrics, s.step
        tps = self.tokens_per_second(s)
        lr = self.engine.get_lr()[0] if self.engine.get_lr() else None
        m.step.set(step)
        m.loss.set(s.losses[-1] if s.losses else float("nan"))
        if s.evals:
            m.eval_loss.set(s.evals[-1][1])
        if lr is not None:
            m.learning_rate.set(lr)
        m.tokens.inc(tokens)
        m.tokens_per_second.set(tps)
        m.samples_per_second.set(tps / self.cfg.data.max_seq_length)
        gn = self.engine.get_global_grad_norm()
        if gn is not None:
            m.grad_norm.set(float(gn))
        m.device_memory.set(memory_bytes())
        u = mfu(tps, self.flops_token, peak_flops(self._device_name()), self.env.world_size)
        if u is not None:
            m.mfu.set(u)
        if self.dpo is not None:
            m.preference("train", self.dpo.train_summary)
            m.preference("eval", self.dpo.eval_summary)
        metrics = tracking.step_metrics(
            s.losses[-1] if s.losses else None,
            lr,
            tps,
            self.trained_tokens(s),
            s.step * self.accumulation / self.micro_per_epoch,
            float(gn) if gn is not None else None,
        )
        # trackers first: once progress shows a checkpoint, what it covers is tracked too
        committed = self.ckpt.last_committed  # one snapshot: the upload thread may move it on
        self.results.on_step(step, metrics, s.evals, committed)
        if self.sink and (force or step % self.cfg.training.log_every_steps == 0):
            p = self.progress(s, tps, "end" if final else "step")
            self.sink.report(dataclasses.replace(p, checkpoint=committed), force=force)

    def tokens_per_second(self, s: loop.LoopState) -> float:
        """Training tokens per second over all ranks during this attempt."""
        done = (s.tokens - self.start_tokens) * self.env.world_size
        return done / s.train_seconds if s.train_seconds else 0.0

    def _device_name(self) -> str:
        import torch

        return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"

    def progress(self, s: loop.LoopState, tps: float, event: str = "step") -> Progress:
        """The snapshot the sinks publish."""
        lr = self.engine.get_lr()
        return Progress(
            step=s.step,
            total_steps=self.total_steps,
            epoch=s.step * self.accumulation / self.micro_per_epoch,
            loss=s.losses[-1] if s.losses else None,
            eval_loss=s.evals[-1][1] if s.evals else None,
            eval_step=s.evals[-1][0] if s.evals else None,
            learning_rate=lr[0] if lr else None,
            tokens_per_second=tps,
            elapsed_seconds=s.train_seconds,
            attempt=self.cfg.job.attempt,
            event=event,
            checkpoint=self.ckpt.last_committed,
            stopped_early=s.stopped_early,
            best_step=s.best_step if self.exports_best else None,
            exported_step=self.export_step,
            preference=self.dpo.progress() if self.dpo else None,
            trained_tokens=self.trained_tokens(s),
            evals=list(s.evals),
            benchmark=self.benchmark_result,
            data_sources=[
                {"uri": x.uri, "sha256": x.sha256, "records": x.records} for x in self.data.sources
            ]
            if event == "end"
            else None,
        )

    def save(self, s: loop.LoopState, wait: bool = False) -> None:
        """Checkpoint now (local save blocks; upload/commit continue in the background)."""
        metrics = {
            "train_loss": s.losses[-1] if s.losses else None,
            "eval_loss": dict(s.evals).get(s.step),
            "trained_tokens": self.trained_tokens(s),
        }
        self.ckpt.save(
            self.engine,
            s.step,
            s.client_state(),
            self.exclude_frozen,
            metrics,
            attachments=self.dpo.attachments() if self.dpo else None,
        )
        self.schedule.saved()
        self.write_probe(s.step)
        if wait or s.preempted:
            self.ckpt.wait()
            self.results.committed(self.ckpt.last_committed)  # the loop may not report again
            if self.sink:
                self.sink.report(self.progress(s, 0.0, event="checkpoint"), force=True)

    # -- finish --------------------------------------------------------------------------------
    def finish(self, s: loop.LoopState) -> None:
        """Final checkpoint (if enabled), export and run card."""
        resumed_step = self.restored.step if self.restored else None
        if self.ckpt.enabled and not s.preempted and self.schedule.final_due(s.step, resumed_step):
            self.save(s, wait=True)
        self.ckpt.wait()
        kept = self.export_from == "engine" and self.export_step not in (None, s.step)
        if kept and self.best.enabled:
            self.best.restore(self.engine.module)  # checkpoints keep the last, export the best
        if self.benchmark is not None:
            self.benchmark_result = {
                **self.benchmark.identity(),
                "before": s.benchmark_before,
                "after": self.score_benchmark(),
            }
            if self.sink:
                self.sink.report(self.progress(s, 0.0, event="end"), force=True)
        self.write_probe()
        if self.cfg.output is not None:
            self.export(s)
        else:
            self.results.finished_without_export()

    def write_probe(self, step: int | None = None) -> None:
        """Engine logits for a fixed input, to KUBETUNE_EXPORT_PROBE (for export verification);
        with a step (at each checkpoint), beside it as <name>-step-NNNNNNNN.safetensors."""
        import torch

        path = os.environ.get("KUBETUNE_EXPORT_PROBE")
        if not path:
            return
        if step is not None:
            p = Path(path)
            path = str(p.with_name(f"{p.stem}-{tag_for(step)}{p.suffix}"))
        seq = (self.data.validation or self.data.train)[0].ids[:32]
        ids = torch.tensor([seq], device=self.engine.device)
        self.engine.eval()
        with torch.no_grad():
            logits = self.engine(input_ids=ids).logits.float().cpu()
        self.engine.train()
        if self.env.is_main:
            from safetensors.torch import save_file

            save_file({"input_ids": ids.cpu(), "logits": logits}, path)

    def export(self, s: loop.LoopState) -> None:
        """The model in HF layout plus the run card and model card, to the output URI; then
        the registries. The weights are the engine's (the last, or the best kept ones put back)
        or, when choose_export_step says so, the best committed checkpoint's."""
        out = self.cfg.output
        assert out is not None
        step = s.step if self.export_step is None else self.export_step
        from_engine = self.export_from == "engine"
        sd = export_mod.full_state_dict(self.engine) if from_engine else None
        shares = {
            "params": self.gather(self.local_params),
            "rss": self.gather(memory_bytes()),
            "fetched": self.gather(len(self.restored.fetched) if self.restored else 0),
        }
        if not self.env.is_main:
            return
        staging = export_mod.fresh_dir(
            Path(self.cfg.checkpoint.local_dir) / job_key(self.cfg) / "export"
        )
        if from_engine:
            assert sd is not None
            module = self.engine.module
        else:
            module = self.checkpoint_module(step)
            sd = module.state_dict()
        written = export_mod.save_model(
            module, sd, out.format, staging, self.tokenizer, self.location, self.hub,
            self.source.base,
        )  # fmt: skip
        card = self.run_card(s, written, shares)
        card["export"] = {"select": out.select, "from": self.export_from, "step": step,
                          "eval_loss": self.eval_at(s, step)}  # fmt: skip
        export_mod.write_run_card(staging, card)
        write_model_card(staging, card)
        export_mod.upload_dir(staging, out.uri, out)
        status = self.results.exported(staging, card, step)
        if self.sink:  # the final state again, now with the registries' results
            p = self.progress(s, self.tokens_per_second(s), event="end")
            self.sink.report(dataclasses.replace(p, export=status), force=True)

    def checkpoint_module(self, step: int) -> Any:
        """Rank 0: the model with the weights of the committed checkpoint at `step`, rebuilt on
        CPU (what `kubetune export` does)."""
        assert self.cfg.checkpoint.uri
        uri = join(self.cfg.checkpoint.uri, tag_for(step))
        work = export_mod.fresh_dir(
            Path(self.cfg.checkpoint.local_dir) / job_key(self.cfg) / "best"
        )
        c = checkpoint_export.fetch(uri, self.cfg.checkpoint.storage, work, self.ckpt.seal)
        weights = checkpoint_export.checkpoint_weights(work, c.tag, self.cfg.deepspeed.zero_stage)
        log.info("exporting checkpoint %s (lowest eval loss)", uri)
        return checkpoint_export.rebuild(
            self.cfg, self.location, self.precision, weights, self.source.adapter
        )

    def adapter_card(self) -> dict[str, str] | None:
        """What became of an adapter source: continued (lora, qlora) or merged (full, partial)."""
        if self.source.adapter is None:
            return None
        how = "continued" if self.cfg.method.type in ("lora", "qlora") else "merged"
        return {"source": self.cfg.model.source, "how": how}

    def gather(self, value: float) -> list[int]:
        """One number from every rank, in rank order."""
        counts = [0.0] * self.env.world_size
        counts[self.env.rank] = float(value)
        return [int(x) for x in self.all_sum(counts)]

    def run_card(
        self, s: loop.LoopState, written: list[str], shares: dict[str, list[int]]
    ) -> dict[str, Any]:
        """Lineage and results of the run."""
        cfg = self.cfg
        trainable = self.trainable_params()
        return {
            "job": cfg.job.model_dump(),
            "spec": redacted_spec(cfg.spec),  # already without secrets; a config from elsewhere too
            "model": {
                "source": cfg.model.source,
                "revision": cfg.model.revision,
                "commit": self.model_commit,
                "dtype": cfg.model.dtype,
                "base": vars(self.source.base),
                "adapter": self.adapter_card(),
            },
            "method": cfg.method.model_dump(),
            "objective": cfg.method.objective,
            "preference": self.dpo.card() if self.dpo else None,
            "output": {
                "uri": cfg.output.uri if cfg.output else None,
                "format": cfg.output.format if cfg.output else None,
                "folders": written,
            },
            "data": {
                "format": self.data.format,
                "train_sequences": len(self.data.train),
                "validation_sequences": len(self.data.validation),
                "sources": [vars(x) for x in self.data.sources],
            },
            "training": {
                "steps": s.step,
                "total_steps": self.total_steps,
                "start_step": self.start_step,
                "stopped_early": s.stopped_early,
                "best_step": s.best_step,
                "best_eval_loss": s.best_eval,
                "exported_step": self.export_step,
                "preempted": s.preempted,
                "first_loss": s.losses[0] if s.losses else None,
                "final_loss": s.losses[-1] if s.losses else None,
                "losses": s.losses,
                "evals": s.evals,
                "tokens": s.tokens,
                "trained_tokens": self.trained_tokens(s),
                "train_seconds": s.train_seconds,
                "seconds_per_step": s.train_seconds / max(1, len(s.losses)),
                "median_loop_seconds_per_step": median_step(s.step_ends),
                "tokens_per_second": self.tokens_per_second(s),
            },
            "distributed": {
                "world_size": self.env.world_size,
                "zero_stage": cfg.deepspeed.zero_stage,
                "precision": self.precision,
                "gradient_accumulation_steps": self.accumulation,
                "params_total": self.total_params,
                "params_trainable": trainable,
                "params_local_per_rank": shares["params"],
                "peak_rss_bytes_per_rank": shares["rss"],
            },
            "checkpoints": {
                "uri": cfg.checkpoint.uri,
                "resumed_from": {k: v for k, v in vars(self.restored).items() if k != "attachments"}
                if self.restored
                else None,
                "files_fetched_per_rank": shares["fetched"] if self.restored else None,
                "committed_steps": self.ckpt.committed_steps,
            },
            "benchmark": self.benchmark_result,
            "deepspeed_config": redact(self.ds_config),
            "software": export_mod.software_versions(),
        }
