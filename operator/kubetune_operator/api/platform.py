"""The platform policy: what a platform team allows jobs on its cluster to use.

Set in the chart's `policy` values, handed to the operator as JSON in KUBETUNE_POLICY, and
checked by the operator before a job's first attempt (a job that breaks it fails with reason
PolicyViolation and a message naming the field and what is allowed); `kubetune validate
--policy FILE` checks a manifest against the same file offline. Every list left unset allows
anything; rules that need no setting (the env a job may not set) are CEL rules in the CRD
(api.guards) instead.
"""

from __future__ import annotations

import fnmatch
import json
import os
from typing import Any
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

POLICY_ENV = "KUBETUNE_POLICY"
DEFAULT_ENDPOINT = "default"
"""In an endpoint list: a store without an endpoint (AWS S3, the public Hugging Face Hub)."""


class _Policy(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class StoreEndpoints(_Policy):
    """Endpoints each store may use: origins (scheme://host[:port], glob patterns allowed)
    or "default"; unset allows any."""

    model: list[str] | None = Field(None, description="spec.model.endpoint (s3:// and hf://).")
    dataset: list[str] | None = Field(None, description="spec.dataset.endpoint.")
    checkpoint: list[str] | None = Field(None, description="spec.checkpoint.endpoint.")
    output: list[str] | None = Field(
        None, description="spec.output.endpoint (default: the checkpoint's)."
    )
    tracking: list[str] | None = Field(
        None,
        description='spec.tracking.mlflow.trackingUri and spec.tracking.wandb.baseUrl ("default": '
        "W&B's own service).",
    )
    push: list[str] | None = Field(
        None,
        description='spec.output.push.endpoint ("default": the public Hugging Face Hub).',
    )


class PlatformPolicy(_Policy):
    """What jobs may use; unset lists allow anything."""

    allowed_images: list[str] | None = Field(
        None,
        description="Glob patterns spec.resources.image must match (the operator's default "
        "trainer image is always allowed).",
    )
    allowed_service_accounts: list[str] | None = Field(
        None, description="spec.resources.serviceAccountName patterns (unset: the per-job one)."
    )
    allowed_priority_classes: list[str] | None = Field(
        None, description="spec.resources.priorityClassName patterns."
    )
    allowed_toleration_keys: list[str] | None = Field(
        None,
        description="Taint keys spec.resources.tolerations may name; a toleration without a "
        'key (it tolerates every taint) needs "*".',
    )
    allowed_endpoints: StoreEndpoints = Field(
        default_factory=StoreEndpoints, description="Endpoints of each object store."
    )
    allow_trust_remote_code: bool = Field(
        True, description="Whether spec.model.trustRemoteCode may be true."
    )

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> PlatformPolicy:
        """The policy in KUBETUNE_POLICY (JSON); none set allows anything. A policy that does
        not parse stops the operator at startup, naming the problem."""
        text = (os.environ if env is None else env).get(POLICY_ENV) or "{}"
        try:
            return cls.model_validate(json.loads(text))
        except (ValueError, ValidationError) as err:
            raise ValueError(f"{POLICY_ENV}: not a valid platform policy: {err}") from None


def origin(url: str) -> str:
    """scheme://host[:port] of an endpoint URL, lower-case: what endpoint rules compare."""
    parsed = urlparse(url.strip())
    host = (parsed.hostname or "").lower()
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme.lower()}://{host}{port}"


def _allowed(value: str, patterns: list[str] | None) -> bool:
    return patterns is None or any(fnmatch.fnmatchcase(value, p) for p in patterns)


def _refusal(field: str, value: str, patterns: list[str]) -> str:
    return (
        f"{field}: {value!r} is not allowed by the platform policy (allowed: "
        f"{', '.join(patterns) or 'none'})"
    )


def endpoint_problem(field: str, endpoint: str | None, patterns: list[str] | None) -> str | None:
    """Why a store's endpoint (None: the default one) breaks its endpoint list, if it does."""
    if patterns is None:
        return None
    if endpoint is None:
        return None if DEFAULT_ENDPOINT in patterns else _refusal(field, "(default)", patterns)
    where = origin(endpoint)
    ok = any(p != DEFAULT_ENDPOINT and fnmatch.fnmatchcase(where, origin(p)) for p in patterns)
    return None if ok else _refusal(field, endpoint, patterns)


def violations(
    spec: Any, policy: PlatformPolicy, endpoints: list[tuple[str, str, str | None]]
) -> list[str]:
    """Every way `spec` (a FineTuneJobSpec) breaks `policy`; `endpoints` lists each remote
    endpoint a job's credentials go to: (its allowedEndpoints list, the field that sets it, the
    endpoint it uses or None for the default one)."""
    r, out = spec.resources, []
    checks = [
        ("spec.resources.image", r.image, policy.allowed_images),
        ("spec.resources.serviceAccountName", r.service_account_name, policy.allowed_service_accounts),
        ("spec.resources.priorityClassName", r.priority_class_name, policy.allowed_priority_classes),
    ]  # fmt: skip
    for field, value, patterns in checks:
        if value is not None and patterns is not None and not _allowed(value, patterns):
            out.append(_refusal(field, value, patterns))
    keys = policy.allowed_toleration_keys
    for i, toleration in enumerate(r.tolerations or []):
        key = toleration.get("key") or ""
        if keys is not None and not (_allowed(key, keys) if key else "*" in keys):
            out.append(_refusal(f"spec.resources.tolerations[{i}].key", key or "(any)", keys))
    if spec.model.trust_remote_code and not policy.allow_trust_remote_code:
        out.append(
            "spec.model.trustRemoteCode: the platform policy does not allow model code from "
            "the model repository to run"
        )
    for kind, field, endpoint in endpoints:
        problem = endpoint_problem(field, endpoint, getattr(policy.allowed_endpoints, kind))
        if problem:
            out.append(problem)
    return out
