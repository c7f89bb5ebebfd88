"""What must never be printed or copied: secret values in logs, literal env values and
credential-looking keys in the spec and DeepSpeed config that go into ConfigMaps and run cards.

One rule for what a credential's name looks like (SECRET_NAME), used by the trainer's log
filter, by the copies of the spec the operator and the trainer write out, and by the API rules
that refuse credentials where a ConfigMap would hold them.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

# A credential's name: API_KEY, apiKey, HF_TOKEN, aws_secret_access_key, password, ... but not
# TOKENIZERS_PARALLELISM or max_new_tokens (token, secret, key, auth need to be a whole segment).
SECRET_NAME = (
    r"(?i)(api_?key|access_?key|private_?key|secret_?key|passw(or)?d|"
    r"(^|[_.-])(token|secret|key|credentials?|auth)([_.-]|$))"
)
_SECRET_NAME = re.compile(SECRET_NAME)
REDACTED = "<redacted>"
# Values in wire logs that are credentials however they are named: signatures, tokens in headers.
_WIRE_SECRETS = re.compile(
    r"(?i)((?:x-amz-security-token|x-amz-signature|signature|authorization|x-amz-credential)"
    r"[\"']?\s*[:=]\s*b?[\"']?)([^\s,\"'&;]+)"
)
# Loggers that print requests and responses at DEBUG (headers included): never below INFO.
WIRE_LOGGERS = (
    "botocore",
    "boto3",
    "s3transfer",
    "urllib3",
    "huggingface_hub",
    "httpx",
    "httpcore",
)


def looks_secret(name: str) -> bool:
    """Whether a variable or key name names a credential."""
    return bool(_SECRET_NAME.search(name))


def redact(value: Any) -> Any:
    """A copy of JSON-like data with the values of credential-looking keys replaced by
    REDACTED, and env lists ([{name, value}]) keeping names and valueFrom but no literal value."""
    if isinstance(value, list):
        return [redact(v) for v in value]
    if not isinstance(value, dict):
        return value
    if isinstance(value.get("name"), str) and set(value) <= {"name", "value", "valueFrom"}:
        return {**value, "value": REDACTED} if "value" in value else value  # valueFrom: a ref
    return {k: REDACTED if looks_secret(str(k)) else redact(v) for k, v in value.items()}


def redacted_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A FineTuneJob spec (camelCase JSON) to copy into a ConfigMap or a run card: env values
    and credential-looking keys of deepspeed.config redacted, the rest as it is (a
    toleration's or a selector's `key` is no credential)."""
    out = dict(spec)
    resources = out.get("resources")
    if isinstance(resources, dict) and resources.get("env"):
        out["resources"] = {**resources, "env": redact(resources["env"])}
    ds = out.get("deepspeed")
    if isinstance(ds, dict) and ds.get("config"):
        out["deepspeed"] = {**ds, "config": redact(ds["config"])}
    return out


def secret_values(env: Mapping[str, str] = os.environ) -> list[str]:
    """Values of the environment's credential variables (long enough to be worth hiding)."""
    return sorted({v for k, v in env.items() if looks_secret(k) and len(v) >= 6}, key=len)[::-1]


class RedactSecrets(logging.Filter):
    """Replaces credential values in every record that passes through a handler."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        clean = _WIRE_SECRETS.sub(lambda m: m.group(1) + REDACTED, text)
        for secret in self.secrets:
            clean = clean.replace(secret, REDACTED)
        if clean != text:
            record.msg, record.args = clean, ()
        return True


def setup_logging(level: str, env: Mapping[str, str] = os.environ) -> None:
    """The trainer's logging at `level` (KUBETUNE_LOG_LEVEL): wire loggers kept at INFO or
    above, and every line filtered for the environment's credentials and request signatures."""
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(message)s")
    root = logging.getLogger()
    for name in WIRE_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.INFO, root.level))
    guard = RedactSecrets(secret_values(env))
    for handler in root.handlers:
        handler.addFilter(guard)
