"""`kubetune` command line: crd | validate | render | run."""

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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
