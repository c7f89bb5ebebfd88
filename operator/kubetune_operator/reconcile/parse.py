"""Parse a FineTuneJob object as the API server returns it into the typed model.

The apiserver already checked the schema and the CEL rules; this catches what only pydantic
knows (and objects written before a schema change) with a message that names the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from kubetune_operator.api.spec import FineTuneJob


class InvalidSpec(ValueError):
    """The job cannot be planned; the message names the offending field."""


def validation_problems(err: ValidationError) -> list[str]:
    """One line per problem, each naming the field as spelled in the manifest."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not str(p).startswith("function-"))
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"{loc}: {msg}" if loc else msg)
    return lines


def describe_validation_error(err: ValidationError) -> str:
    """The problems on one line, as they go into a job's status message."""
    return "; ".join(validation_problems(err))


def parse_job(body: Mapping[str, Any]) -> FineTuneJob:
    """The typed job from a raw object (status and unknown metadata are ignored)."""
    raw = {k: v for k, v in body.items() if k != "status"}
    try:
        return FineTuneJob.model_validate(raw)
    except ValidationError as err:
        raise InvalidSpec(describe_validation_error(err)) from err
    except (RecursionError, MemoryError, TypeError, ValueError) as err:
        # Not a validation error but the same verdict: this object cannot be planned, now or
        # on any later pass, so it fails instead of being retried forever without a status.
        raise InvalidSpec(f"the job cannot be read: {type(err).__name__}: {err}"[:1024]) from err
