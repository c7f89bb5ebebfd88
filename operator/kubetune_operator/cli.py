"""`kubetune` command line: crd | validate | render | run | export."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml
from pydantic import ValidationError

from kubetune_operator.api.crd import crd_yaml
from kubetune_operator.api.manifests import load_documents, load_manifest
from kubetune_operator.api.platform import PlatformPolicy
from kubetune_operator.api.spec import FineTuneJob
from kubetune_operator.reconcile.parse import validation_problems
from kubetune_operator.reconcile.plan import OperatorSettings, policy_violations


def format_validation_error(err: ValidationError) -> str:
    """The problems one per line, for a terminal."""
    return "\n".join(validation_problems(err))


def cmd_crd(_: argparse.Namespace) -> int:
    sys.stdout.write(crd_yaml())
    return 0


def load_policy(path: str | None) -> PlatformPolicy | None:
    """The platform policy in a YAML or JSON file (the chart's `policy` values), if given."""
    if path is None:
        return None
    return PlatformPolicy.model_validate(yaml.safe_load(Path(path).read_text()) or {})


def validate_documents(
    path: str, policy: PlatformPolicy | None = None
) -> tuple[list[str], list[str]]:
    """Every FineTuneJob document of the file checked (and against `policy` when given):
    (lines for valid ones, errors)."""
    ok: list[str] = []
    errors: list[str] = []
    try:
        docs = load_documents(Path(path).read_text())
    except (ValueError, OSError, yaml.YAMLError) as err:
        return ok, [f"error: {path}: {err}"]
    jobs = [
        (i, d)
        for i, d in enumerate(docs, 1)
        if isinstance(d, dict) and d.get("kind") == "FineTuneJob"
    ]
    if not jobs:
        return ok, [f"error: {path}: no FineTuneJob document found"]
    for index, doc in jobs:
        name = (
            (doc.get("metadata") or {}).get("name")
            if isinstance(doc.get("metadata"), dict)
            else None
        )
        where = f"{path}: document {index}" + (f" ({name})" if isinstance(name, str) else "")
        try:
            job = FineTuneJob.model_validate(doc)
        except ValidationError as err:
            errors += [f"error: {where}: {line}" for line in validation_problems(err)]
            continue
        if policy is not None:
            refused = policy_violations(job.spec, OperatorSettings(policy=policy))
            if refused:
                errors += [f"error: {where}: {line}" for line in refused]
                continue
        ok.append(f"{where}: FineTuneJob {job.metadata.name} is valid")
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


def cmd_render(args: argparse.Namespace) -> int:
    """Print the child objects the operator would create for attempt N of the job."""
    from kubetune_operator.reconcile.parse import InvalidSpec
    from kubetune_operator.reconcile.plan import cluster_problems, resolve
    from kubetune_operator.reconcile.render import render

    try:
        job = load_manifest(args.manifest)
        settings = OperatorSettings.from_env()
        if args.image:
            settings = OperatorSettings(trainer_image=args.image)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubetune", description="Fine-tune LLMs on Kubernetes.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("crd", help="print the FineTuneJob CRD").set_defaults(func=cmd_crd)
    v = sub.add_parser("validate", help="check a FineTuneJob manifest offline")
    v.add_argument("manifest")
    v.add_argument("--policy", help="also check against this platform policy (YAML or JSON)")
    v.set_defaults(func=cmd_validate)
    r = sub.add_parser("render", help="print the child objects the operator creates for a job")
    r.add_argument("manifest")
    r.add_argument("--attempt", type=int, default=1, help="attempt number (default 1)")
    r.add_argument("--image", help="trainer image (default: $KUBETUNE_TRAINER_IMAGE)")
    r.add_argument("--upstream-output", help="output URI of the job an ftj:// source names")
    r.set_defaults(func=cmd_render)
    run = sub.add_parser("run", help="run a FineTuneJob on this machine (no cluster)")
    run.add_argument("manifest")
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
