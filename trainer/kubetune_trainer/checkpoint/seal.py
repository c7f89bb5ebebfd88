"""Which checkpoints a job may restore: those it (or, when named, a job of its namespace) signed.

DeepSpeed restores a checkpoint with torch.load(weights_only=False): unpickling a file runs
whatever code it names, so anyone who can write the store could run code in the trainer. Every
record the trainer writes to the store (each rank's upload record, the owner marker, the
manifest that commits a checkpoint) is signed with HMAC-SHA256 under the namespace's checkpoint
key, and names the job (namespace/name). Before any file is downloaded, the manifest must verify
under that key; every file must then match the sha256 the signed manifest lists. The key comes
from the Secret the operator keeps in each namespace (KUBETUNE_CHECKPOINT_KEY in the worker's
env; `kubetune run` keeps one per user), never from the store.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..contract import CHECKPOINT_KEY_ENV, CHECKPOINT_SECRET_KEY
from ..errors import BadInputError

SIGNATURE = "signature"


def canonical(record: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers: the record without its signature, keys sorted."""
    body = {k: v for k, v in record.items() if k != SIGNATURE}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=True).encode()


@dataclass(frozen=True)
class Seal:
    """The namespace's checkpoint key and the job that writes with it."""

    key: bytes
    job: str  # namespace/name

    def sign(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """`record` naming this job, with its signature."""
        body = {**{k: v for k, v in record.items() if k != SIGNATURE}, "job": self.job}
        return {**body, SIGNATURE: self._mac(body)}

    def verify(self, record: Any) -> bool:
        """Whether `record` was signed with this key (by any job of the namespace)."""
        if not isinstance(record, Mapping) or not isinstance(record.get(SIGNATURE), str):
            return False
        return hmac.compare_digest(record[SIGNATURE], self._mac(record))

    def mine(self, record: Any) -> bool:
        """Whether `record` was signed with this key by this job."""
        return self.verify(record) and record.get("job") == self.job

    def _mac(self, record: Mapping[str, Any]) -> str:
        return hmac.new(self.key, canonical(record), hashlib.sha256).hexdigest()


def local_key_path(folder: Path | None = None) -> Path:
    """Where `kubetune run` keeps this user's key: $XDG_CONFIG_HOME/kubetune (default
    ~/.config/kubetune)."""
    base = folder or Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "kubetune" / "checkpoint-key"


def local_key(folder: Path | None = None) -> str:
    """This user's key for `kubetune run` (no cluster, no Secret): made once, kept 0600 in
    local_key_path, so later runs resume."""
    path = local_key_path(folder)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path.read_text().strip()


def for_reading(key_file: str | None, env: Mapping[str, str] = os.environ) -> Seal:
    """A Seal that verifies the checkpoints of any job of a namespace (`kubetune export`): the
    key in key_file, else KUBETUNE_CHECKPOINT_KEY, else this user's `kubetune run` key."""
    if key_file:
        key = Path(key_file).read_text().strip()
    else:
        key = env.get(CHECKPOINT_KEY_ENV, "") or (
            local_key_path().read_text().strip() if local_key_path().is_file() else ""
        )
    if not key:
        raise BadInputError(
            f"no checkpoint key: checkpoints are only read once their manifest verifies under "
            f"the namespace's key. Set {CHECKPOINT_KEY_ENV} or pass --key-file (in a cluster: "
            "kubectl get secret kubetune-checkpoint-key -n NAMESPACE -o "
            f"jsonpath='{{.data.{CHECKPOINT_SECRET_KEY}}}' | base64 -d)"
        )
    return Seal(key.encode(), "")


def from_env(job: str, env: Mapping[str, str] = os.environ) -> Seal:
    """The Seal of `job` with the key in KUBETUNE_CHECKPOINT_KEY; bad input when it is unset."""
    key = env.get(CHECKPOINT_KEY_ENV, "")
    if not key:
        raise BadInputError(
            f"{CHECKPOINT_KEY_ENV} is not set: checkpoints can be neither signed nor verified without the "
            "namespace's checkpoint key (the operator and `kubetune run` set it)"
        )
    return Seal(key.encode(), job)
