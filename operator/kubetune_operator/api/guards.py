"""Rules against hostile or contradictory input, each written once: a CEL rule for the
apiserver and a check of the same manifest JSON for `kubetune validate` and the operator.

Each Guard names the schema node its CEL rule is attached to (`at`, dotted, relative to spec;
`[]` steps into list items) and the field it blames; `check` reads the same node of the
manifest as CEL sees it (camelCase JSON, defaults filled in) and returns the same message CEL's
messageExpression builds, or None. crd.build_crd attaches every rule; spec.FineTuneJobSpec runs
every check; a test runs a table of bad manifests through both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Json = dict[str, Any]


@dataclass(frozen=True)
class Guard:
    """One rule: where it lives in the schema, its CEL, and its offline twin."""

    at: str
    cel: str
    summary: str
    message_cel: str
    field: str
    check: Callable[[Json], str | None]

    def rule(self) -> dict[str, str]:
        """The x-kubernetes-validations entry (the summary stands in should the message
        expression fail, and is what the API reference shows)."""
        out = {"rule": self.cel, "message": self.summary, "messageExpression": self.message_cel}
        if self.field:
            out["fieldPath"] = self.field
        return out


def cel_list(names: tuple[str, ...]) -> str:
    """A CEL list literal of strings."""
    return "[" + ", ".join(f"'{n}'" for n in names) + "]"


def node(spec: Json, at: str) -> list[Json]:
    """The values at dotted path `at` of a spec (every item where a step ends in [])."""
    found: list[Any] = [spec]
    for step in at.split(".") if at else []:
        key, many = step.removesuffix("[]"), step.endswith("[]")
        found = [n.get(key) for n in found if isinstance(n, dict) and n.get(key) is not None]
        if many:
            found = [item for n in found if isinstance(n, list) for item in n]
    return [n for n in found if isinstance(n, dict)]


# --- env the operator sets ---------------------------------------------------------------
# What the operator and torchrun put in a worker's env, and what changes which code runs or
# where credentials go: a job may not set these (HF_ENDPOINT or AWS_ENDPOINT_URL would send the
# job's credentials to any host; the endpoint fields, checked by the platform policy, say it).
RESERVED_ENV = (
    "MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE",
    "NODE_RANK", "NNODES", "NPROC_PER_NODE", "GROUP_RANK", "POD_NAME", "PYTHONUNBUFFERED",
    "PATH", "LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "PYTHONPATH", "PYTHONHOME",
    "PYTHONSTARTUP",
)  # fmt: skip
RESERVED_ENV_PREFIXES = ("KUBETUNE_", "AWS_", "HF_", "TORCHELASTIC_")

_RESERVED_CEL = f"self.name in {cel_list(RESERVED_ENV)} || " + " || ".join(
    f"self.name.startsWith('{p}')" for p in RESERVED_ENV_PREFIXES
)
_ENV_TAIL = (
    ": names kubetune reserves (the rendezvous, KUBETUNE_*, AWS_*, HF_*, PATH, LD_* and PYTHON* "
    "variables); set endpoints, regions and credentials with the fields of spec.model, "
    "spec.dataset, spec.checkpoint and spec.output"
)
assert "'" not in _ENV_TAIL  # it is also a CEL string literal


def reserved_env(name: str) -> bool:
    """Whether a job may not set env variable `name`."""
    return name in RESERVED_ENV or name.startswith(RESERVED_ENV_PREFIXES)


def _env_shadows(var: Json) -> str | None:
    name = str(var.get("name", ""))
    return f"spec.resources.env: {name}{_ENV_TAIL}" if reserved_env(name) else None


GUARDS: list[Guard] = [
    Guard(
        at="resources.env[]",
        cel=f"!({_RESERVED_CEL})",
        summary=f"spec.resources.env: a job may not set{_ENV_TAIL}",
        message_cel=f"'spec.resources.env: ' + self.name + '{_ENV_TAIL}'",
        field=".name",
        check=_env_shadows,
    ),
]


def problems(spec: Json) -> list[str]:
    """The message of every guard a spec (camelCase JSON, defaults filled in) breaks."""
    out = []
    for guard in GUARDS:
        for value in node(spec, guard.at):
            message = guard.check(value)
            if message:
                out.append(message)
    return out


def attach(spec_schema: Json) -> Json:
    """The spec's structural schema with every guard's CEL rule at its node."""
    for guard in GUARDS:
        target = spec_schema
        for step in guard.at.split(".") if guard.at else []:
            target = target["properties"][step.removesuffix("[]")]
            if step.endswith("[]"):
                target = target["items"]
        target.setdefault("x-kubernetes-validations", []).append(guard.rule())
    return spec_schema
