"""`kubetune` command line: crd | validate | render | run | export."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from kubetune_operator.api import constants as c
from kubetune_operator.api.crd import crd_yaml
from kubetune_operator.api.manifests import load_documents, load_manifest
from kubetune_operator.api.platform import PlatformPolicy
from kubetune_operator.api.spec import FineTuneJob
from kubetune_operator.reconcile.parse import validation_problems
from kubetune_operator.reconcile.plan import OperatorSettings, policy_violations


def format_validation_error(err: ValidationError) -> str:
    """The problems one per line, for a terminal."""
    return "\n".join(validation_problems(err))


def cmd_crd(args: argparse.Namespace) -> int:
    sys.stdout.write(crd_yaml(args.plural))
    return 0


KINDS = ("FineTuneJob", "FineTuneSweep", "FineTuneSchedule")


def load_policy(path: str | None) -> PlatformPolicy | None:
    """The platform policy in a YAML or JSON file (the chart's `policy` values), if given."""
    if path is None:
        return None
    return PlatformPolicy.model_validate(yaml.safe_load(Path(path).read_text()) or {})


def made_jobs(doc: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """The FineTuneJobs a document is or makes (a sweep: every trial; a schedule: its first
    run), and why any of them cannot be made. Raises ValidationError or ValueError."""
    from kubetune_operator.lifecycle import offline

    if doc.get("kind") == "FineTuneJob":
        FineTuneJob.model_validate(doc)
        return [doc], []
    made = (
        offline.sweep_trials(doc)
        if doc.get("kind") == "FineTuneSweep"
        else [offline.schedule_first_run(doc)]
    )
    return [job for job, _ in made if job is not None], [why for _, why in made if why]


def check_document(doc: dict[str, Any], policy: PlatformPolicy | None = None) -> list[str]:
    """Problems of one document: a job's fields; a sweep's fields and every trial job it
    makes; a schedule's fields, cron schedule and the run job it makes; with `policy`, what
    the platform policy refuses in any of those jobs."""
    try:
        jobs, problems = made_jobs(doc)
        if problems or policy is None:
            return problems
        settings = OperatorSettings(policy=policy)
        for made in jobs:
            job = FineTuneJob.model_validate(made)
            prefix = "" if made is doc else f"{job.metadata.name}: "
            problems += [prefix + line for line in policy_violations(job.spec, settings)]
        return problems
    except ValidationError as err:
        return validation_problems(err)
    except ValueError as err:
        return [str(err)]


def validate_documents(
    path: str, policy: PlatformPolicy | None = None
) -> tuple[list[str], list[str]]:
    """Every FineTuneJob, FineTuneSweep and FineTuneSchedule document of the file checked
    (and against `policy` when given): (lines for valid ones, errors)."""
    ok: list[str] = []
    errors: list[str] = []
    try:
        docs = load_documents(Path(path).read_text())
    except (ValueError, OSError, yaml.YAMLError) as err:
        return ok, [f"error: {path}: {err}"]
    found = [
        (i, d) for i, d in enumerate(docs, 1) if isinstance(d, dict) and d.get("kind") in KINDS
    ]
    if not found:
        return ok, [f"error: {path}: no {', '.join(KINDS[:-1])} or {KINDS[-1]} document found"]
    for index, doc in found:
        name = (
            (doc.get("metadata") or {}).get("name")
            if isinstance(doc.get("metadata"), dict)
            else None
        )
        where = f"{path}: document {index}" + (f" ({name})" if isinstance(name, str) else "")
        problems = check_document(doc, policy)
        if problems:
            errors += [f"error: {where}: {line}" for line in problems]
            continue
        ok.append(f"{where}: {doc['kind']} {name} is valid")
    return ok, errors


def cmd_validate(args: argparse.Namespace) -> int:
    try:
        policy = load_policy(args.policy)
    except (ValueError, OSError, yaml.YAMLError) as err:
        print(f"error: {args.policy}: {err}", file=sys.stderr)
        return 1
    ok, errors = validate_documents(args.manifest, policy)
    for line in ok:
        print(line)
    for line in errors:
        print(line, file=sys.stderr)
    return 1 if errors else 0


def lifecycle_document(path: str) -> dict[str, Any] | None:
    """The first FineTuneSweep or FineTuneSchedule of a file without a FineTuneJob, else None."""
    docs = [d for d in load_documents(Path(path).read_text()) if isinstance(d, dict)]
    if any(d.get("kind") == "FineTuneJob" for d in docs):
        return None
    return next((d for d in docs if d.get("kind") in KINDS[1:]), None)


def render_lifecycle(doc: dict[str, Any]) -> int:
    """Print the FineTuneJobs a sweep makes (every trial) or a schedule's first run."""
    try:
        jobs, problems = made_jobs(doc)
    except ValidationError as err:
        print(f"invalid {doc['kind']}\n{format_validation_error(err)}", file=sys.stderr)
        return 1
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for why in problems:
        print(f"error: {why}", file=sys.stderr)
    sys.stdout.write(yaml.safe_dump_all(jobs, sort_keys=False, width=100))
    return 1 if problems else 0


def cmd_render(args: argparse.Namespace) -> int:
    """Print the child objects the operator would create for attempt N of the job (for a
    sweep or a schedule: the FineTuneJobs it makes)."""
    from kubetune_operator.reconcile.parse import InvalidSpec

    try:
        parent = lifecycle_document(args.manifest)
    except (ValueError, OSError, yaml.YAMLError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if parent is not None:
        return render_lifecycle(parent)
    from kubetune_operator.reconcile.plan import cluster_problems, resolve
    from kubetune_operator.reconcile.render import render

    try:
        job = load_manifest(args.manifest)
        settings = OperatorSettings.from_env()
        if args.image:  # overrides the image only; every other operator setting stays
            settings = dataclasses.replace(settings, trainer_image=args.image)
        if cluster_problems(job.spec):
            raise InvalidSpec("; ".join(cluster_problems(job.spec)))
        plan = resolve(job, args.attempt, settings, upstream_output=args.upstream_output)
    except ValidationError as err:
        print(
            f"{args.manifest}: invalid FineTuneJob\n{format_validation_error(err)}", file=sys.stderr
        )
        return 1
    except (InvalidSpec, ValueError, OSError, yaml.YAMLError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    sys.stdout.write(yaml.safe_dump_all(render(plan), sort_keys=False, width=100))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run the job on this machine: one torchrun agent per worker, rendezvous on 127.0.0.1."""
    from kubetune_operator.local.runner import run_manifest

    return run_manifest(args.manifest, workdir=args.workdir, quiet=args.quiet)


def cmd_export(args: argparse.Namespace) -> int:
    """A committed checkpoint as the Hugging Face output its job writes at the end, on CPU."""
    import importlib.util
    import tempfile

    if importlib.util.find_spec("torch") is None:
        print("error: kubetune export needs the trainer extra: pip install 'kubetune[trainer]'",
              file=sys.stderr)  # fmt: skip
        return 1
    from kubetune_trainer.checkpoint.seal import for_reading
    from kubetune_trainer.checkpoint_export import export_checkpoint
    from kubetune_trainer.config import StorageConfig
    from kubetune_trainer.errors import BadInputError

    out = args.out if "://" in args.out else f"file://{Path(args.out).resolve()}"
    storage = StorageConfig(endpoint=args.endpoint, region=args.region)
    with tempfile.TemporaryDirectory(prefix="kubetune-export-") as work:
        try:
            seal = for_reading(args.key_file)
            card = export_checkpoint(
                args.checkpoint, out, Path(work), seal, args.format, storage, storage
            )
        except (BadInputError, OSError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
    e = card["export"]
    print(f"{args.checkpoint}: step {e['step']} of job {card['job']['name']} "
          f"({card['output']['format']}) written to {out}")  # fmt: skip
    return 0


VALIDATE_HELP = """\
Check every FineTuneJob, FineTuneSweep and FineTuneSchedule document of a manifest file offline
(a sweep's every trial job, a schedule's first run job), with the same rules the apiserver
applies (schema and cross-field rules) and, with --policy, the platform policy the operator is
configured with; problems are printed with the field they concern. Exit status 0 when all are
valid, 1 otherwise."""

RUN_HELP = """\
Run a FineTuneJob on this machine, no cluster needed: the same plan the operator renders, with
one torchrun agent per worker (spec.resources.nodes) meeting on 127.0.0.1, and the job's run
policy (a failed attempt is retried within runPolicy.backoffLimit and resumes from the latest
checkpoint). file:// paths are relative to the current directory; s3:// and hf:// work as in
a cluster; pvc:// and ftj:// need a cluster. Afterwards it prints the eval loss before and
after, draws the loss curve, and says where the model went; a failed run ends with its cause."""

EPILOG = "examples:\n  {}"


def _examples(*lines: str) -> str:
    """An epilog listing example command lines."""
    return EPILOG.format("\n  ".join(lines))


def package_version() -> str:
    """The installed distribution's version (the source tree's when not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    from kubetune_operator import __version__

    try:
        return version("kubetune")
    except PackageNotFoundError:
        return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubetune", description="Fine-tune LLMs on Kubernetes.")
    parser.add_argument("--version", action="version", version=f"kubetune {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    crd = sub.add_parser("crd", help="print a CRD (default: FineTuneJob)")
    crd.add_argument(
        "plural",
        nargs="?",
        default=c.PLURAL,
        choices=[c.PLURAL, c.SWEEP_PLURAL, c.SCHEDULE_PLURAL],
        help="which CRD (default finetunejobs)",
    )
    crd.set_defaults(func=cmd_crd)
    v = sub.add_parser(
        "validate",
        help="check FineTuneJob, FineTuneSweep and FineTuneSchedule manifests offline",
        description=VALIDATE_HELP,
        epilog=_examples(
            "kubetune validate examples/lora-2x8-s3.yaml",
            "kubetune validate jobs.yaml     # every document in the file",
            "kubetune validate examples/sweep-lr-rank.yaml   # every trial job of the sweep",
            "kubetune validate job.yaml --policy platform-policy.yaml",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    v.add_argument(
        "manifest",
        help="YAML file with one or more FineTuneJob, FineTuneSweep or FineTuneSchedule documents",
    )
    v.add_argument("--policy", help="also check against this platform policy (YAML or JSON)")
    v.set_defaults(func=cmd_validate)
    r = sub.add_parser(
        "render",
        help="print the child objects the operator creates for a job (for a sweep or a "
        "schedule: the jobs it makes)",
    )
    r.add_argument("manifest")
    r.add_argument("--attempt", type=int, default=1, help="attempt number (default 1)")
    r.add_argument("--image", help="trainer image (default: $KUBETUNE_TRAINER_IMAGE)")
    r.add_argument("--upstream-output", help="output URI of the job an ftj:// source names")
    r.set_defaults(func=cmd_render)
    run = sub.add_parser(
        "run",
        help="run a FineTuneJob on this machine (no cluster)",
        description=RUN_HELP,
        epilog=_examples(
            "make demo     # builds the tiny base model and data, then runs the next line",
            "kubetune run examples/quickstart.yaml",
            "kubetune run job.yaml --workdir /scratch/run1 --quiet",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("manifest", help="YAML file with a FineTuneJob (the first one is run)")
    run.add_argument("--workdir", help="where logs, config and plots go (default runs/<job>)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.set_defaults(func=cmd_run)
    ex = sub.add_parser(
        "export",
        help="turn a committed checkpoint into the job's Hugging Face output (CPU, no gang)",
        description="Write the model of a committed checkpoint (a URI from "
        "status.checkpoints.committed) the way its job writes its final model: merged weights "
        "and/or the LoRA adapter as safetensors, tokenizer, run card and model card. Runs on "
        "CPU; S3 keys come from the usual AWS variables. Only a checkpoint whose manifest is "
        "signed with the namespace's checkpoint key is read (DeepSpeed's files are pickles).",
        epilog="example: kubetune export s3://ckpts/my-job/step-00000400 ./my-job-step400",
    )
    ex.add_argument("checkpoint", help="checkpoint URI, <checkpoint.uri>/step-NNNNNNNN")
    ex.add_argument("out", help="output folder or URI (file://, s3://)")
    ex.add_argument("--format", choices=["merged", "adapter", "both"],
                    help="default: the job's spec.output.format")  # fmt: skip
    ex.add_argument("--endpoint", help="S3 endpoint URL of the checkpoint and output stores")
    ex.add_argument("--region", help="S3 region")
    ex.add_argument(
        "--key-file",
        help="file holding the namespace's checkpoint key (default: $KUBETUNE_CHECKPOINT_KEY, "
        "else the key of `kubetune run`)",
    )
    ex.set_defaults(func=cmd_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
