"""`kubetune run job.yaml`: the job's attempts on this machine, with the operator's policies.

setup (plan, config file) -> attempts (gang of local workers; a failure ends the attempt and,
within runPolicy.backoffLimit, the next one resumes from the latest checkpoint) -> report
(loss-curve PNG, eval loss before/after, where the model went).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
import uuid
from pathlib import Path

from pydantic import ValidationError

from kubetune_operator.api.manifests import load_manifest
from kubetune_operator.api.spec import FineTuneJob
from kubetune_operator.local.gang import GangResult, run_gang
from kubetune_operator.local.plan import config_path, local_plan, local_uri
from kubetune_operator.local.report import plot_curve, read_curve, summary
from kubetune_operator.reconcile.classify import NOT_RETRIED, classify_exit
from kubetune_operator.reconcile.parse import InvalidSpec, validation_problems
from kubetune_operator.reconcile.policies import backoff


def say(line: str) -> None:
    print(f"[kubetune] {line}", file=sys.stderr, flush=True)


def run_job(
    job: FineTuneJob,
    workdir: Path,
    base: Path,
    console: bool = True,
    command: list[str] | None = None,
) -> int:
    """Run attempts until success, bad input, or the backoff limit; returns the exit status."""
    job = with_uid(job)
    limit = job.spec.run_policy.backoff_limit
    attempt, restarts = 1, 0
    started = time.monotonic()
    (workdir / "progress.jsonl").unlink(missing_ok=True)  # this run's curve only
    while True:
        plan = local_plan(job, attempt, workdir, base, console)
        cfg_file = config_path(workdir, attempt)
        cfg_file.parent.mkdir(parents=True, exist_ok=True)
        cfg_file.write_text(plan.trainer_config.to_json())
        say(
            f"attempt {attempt}: {plan.nodes} worker(s) x {plan.processes_per_node} process(es), logs in {cfg_file.parent}"
        )
        result = run_gang(plan, cfg_file, cfg_file.parent, command=command, show_rank0=True)
        if result.ok:
            break
        reason = failure_reason(result)
        rank = result.failed_rank or 0
        say(f"attempt {attempt} failed: worker {rank} exited {result.exit_codes[rank]} ({reason})")
        if reason in NOT_RETRIED or not backoff.may_restart(restarts, limit):
            say(
                f"giving up (backoffLimit={limit})"
                if reason not in NOT_RETRIED
                else f"not retrying: {reason} fails the same way again"
            )
            finish(
                job,
                workdir,
                plan.trainer_config.output.uri if plan.trainer_config.output else None,
                ok=False,
            )
            print(f"error: {failure_cause(result, cfg_file.parent)}", file=sys.stderr)
            return 1
        if result.cause:
            say(f"cause: {result.cause}")
        attempt, restarts = attempt + 1, restarts + 1
    say(f"finished in {time.monotonic() - started:.0f}s")
    finish(
        job,
        workdir,
        plan.trainer_config.output.uri if plan.trainer_config.output else None,
        ok=True,
    )
    return 0


def with_uid(job: FineTuneJob) -> FineTuneJob:
    """The job with a uid for this invocation, as the API server gives one: every attempt
    shares it (an MLflow run is found again by it), the next `kubetune run` gets a new one."""
    if job.metadata.uid:
        return job
    meta = job.metadata.model_copy(update={"uid": str(uuid.uuid4())})
    return job.model_copy(update={"metadata": meta})


def failure_reason(result: GangResult) -> str:
    """The operator's failure class for a local worker's exit code."""
    code = result.exit_codes[result.failed_rank or 0]
    if code < 0:
        return "OOMKilled" if code == -9 else "Error"
    return classify_exit(code, None)


def failure_cause(result: GangResult, log_dir: Path) -> str:
    """The line a failed run ends with: the trainer's own message (the bad record, the missing
    key), else where to read the failed worker's output."""
    if result.cause:
        return result.cause
    rank = result.failed_rank or 0
    output = "above" if rank == 0 else str(log_dir / f"worker-{rank}.log")  # 0 is shown live
    return f"worker {rank} exited {result.exit_codes[rank]} without a message; its output: {output}"


def finish(job: FineTuneJob, workdir: Path, output_uri: str | None, ok: bool) -> None:
    """Loss curve PNG and the numbers that tell whether it learned."""
    curve = read_curve(workdir / "progress.jsonl")
    for line in summary(curve):
        say(line)
    png = plot_curve(curve, workdir / "loss.png", f"{job.metadata.name}: loss")
    if png:
        say(f"loss curve: {png}")
    if ok and output_uri:
        say(f"model: {output_uri}")
        show_sample(job, output_uri)


def show_sample(job: FineTuneJob, output_uri: str) -> None:
    """Base vs fine-tuned generation for a local merged model (skipped when not applicable)."""
    cfg_base = Path.cwd()
    model = local_uri(job.spec.model.source, "spec.model.source", cfg_base)
    data = local_uri(
        job.spec.dataset.validation or job.spec.dataset.train, "spec.dataset", cfg_base
    )
    tuned = Path(output_uri.removeprefix("file://"))
    if not (model and data and output_uri.startswith("file://") and data.startswith("file://")):
        return
    if not (tuned / "config.json").exists() or importlib.util.find_spec("transformers") is None:
        return
    argv = [
        sys.executable,
        "-m",
        "kubetune_operator.local.sample",
        "--base",
        model.removeprefix("file://"),
    ]
    argv += ["--tuned", str(tuned), "--data", data.removeprefix("file://")]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    if result.returncode == 0:
        for line in result.stdout.splitlines():
            say(line)
    else:
        said = result.stderr.strip().splitlines()
        say(f"no sample generation: {said[-1] if said else f'exit code {result.returncode}'}")


def run_manifest(
    path: str, workdir: str | None = None, quiet: bool = False, command: list[str] | None = None
) -> int:
    """Entry point of `kubetune run`."""
    try:
        job = load_manifest(path)
        target = Path(workdir) if workdir else Path("runs") / job.metadata.name
        return run_job(job, target.resolve(), Path.cwd(), console=not quiet, command=command)
    except KeyboardInterrupt:
        say("interrupted: the workers were asked to checkpoint and stop")
        return 130
    except ValidationError as err:
        print(f"{path}: invalid FineTuneJob", *validation_problems(err), sep="\n", file=sys.stderr)
    except (InvalidSpec, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
    return 1
