"""`kubetune` command line: crd | validate (render and run are added by the operator modules)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml
from pydantic import ValidationError

from kubetune_operator.api.crd import crd_yaml
from kubetune_operator.api.spec import FineTuneJob


def load_manifest(path: str) -> FineTuneJob:
    """Parse and validate a FineTuneJob manifest file (the first FineTuneJob document in it)."""
    for doc in yaml.safe_load_all(Path(path).read_text()):
        if isinstance(doc, dict) and doc.get("kind") == "FineTuneJob":
            return FineTuneJob.model_validate(doc)
    raise ValueError(f"{path}: no FineTuneJob document found")


def format_validation_error(err: ValidationError) -> str:
    """One line per problem, each naming the field as it is spelled in the manifest."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not str(p).startswith("function-"))
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"{loc}: {msg}" if loc else msg)
    return "\n".join(lines)


def cmd_crd(_: argparse.Namespace) -> int:
    sys.stdout.write(crd_yaml())
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    try:
        job = load_manifest(args.manifest)
    except ValidationError as err:
        print(f"{args.manifest}: invalid FineTuneJob\n{format_validation_error(err)}", file=sys.stderr)
        return 1
    except (ValueError, OSError, yaml.YAMLError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{args.manifest}: FineTuneJob {job.metadata.name} is valid")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubetune", description="Fine-tune LLMs on Kubernetes.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("crd", help="print the FineTuneJob CRD").set_defaults(func=cmd_crd)
    v = sub.add_parser("validate", help="check a FineTuneJob manifest offline")
    v.add_argument("manifest")
    v.set_defaults(func=cmd_validate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
