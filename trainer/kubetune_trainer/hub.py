"""hf:// sources: a Hub repository (or a path in it) downloaded with huggingface_hub.

Forms: `hf://org/name[@revision][/path/in/repo]`; data fields also accept the
`hf://datasets/org/name...` spelling. The endpoint comes from the store's endpoint field
(spec.model.endpoint, spec.dataset.endpoint: a private hub or a mirror), else HF_ENDPOINT; the
token from HF_TOKEN. The revision is resolved to a commit once, and that commit is
what gets downloaded and recorded in the run card.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .contract import HUB_TOKEN_KEY
from .errors import BadInputError


@dataclass(frozen=True)
class HubRef:
    """One parsed hf:// URI."""

    repo_id: str
    revision: str | None
    path: str


@dataclass(frozen=True)
class HubSnapshot:
    """A downloaded repository: the local folder, the repo, and the commit it came from."""

    local: Path
    repo_id: str
    commit: str


def parse(uri: str, field: str, dataset: bool) -> HubRef:
    """The repo id, optional @revision and optional path of an hf:// URI."""
    rest = uri.removeprefix("hf://")
    if dataset:
        rest = rest.removeprefix("datasets/")
    parts = rest.split("/")
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise BadInputError(f"{field} {uri!r}: expected hf://org/name[@revision][/path]")
    name, _, revision = parts[1].partition("@")
    return HubRef(f"{parts[0]}/{name}", revision or None, "/".join(parts[2:]).strip("/"))


def pick_revision(ref: HubRef, revision: str | None, field: str) -> str | None:
    """One revision from the URI's @rev and the revision field; they must agree if both set."""
    if ref.revision and revision and ref.revision != revision:
        raise BadInputError(
            f"{field}: revision {revision!r} disagrees with @{ref.revision} in the source URI"
        )
    return ref.revision or revision


def download(
    ref: HubRef, revision: str | None, repo_type: str, field: str, endpoint: str | None = None
) -> HubSnapshot:
    """Resolve the revision to a commit and download that commit (only ref.path if set), from
    `endpoint` (the store's endpoint field), else HF_ENDPOINT, else the public Hub."""
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    token = os.environ.get(HUB_TOKEN_KEY) or None
    api = HfApi(endpoint=endpoint or os.environ.get("HF_ENDPOINT") or None, token=token)
    where = f"{field} {repo_type} repo {ref.repo_id!r}"
    try:
        commit = api.repo_info(ref.repo_id, revision=revision, repo_type=repo_type).sha
    except RevisionNotFoundError:
        raise BadInputError(f"{where}: revision {revision!r} not found") from None
    except RepositoryNotFoundError:
        raise BadInputError(f"{where}: not found (or no access with HF_TOKEN)") from None
    except HfHubHTTPError as e:
        raise BadInputError(f"{where}: {e}") from None
    if not commit:
        raise BadInputError(f"{where}: the hub returned no commit for {revision!r}")
    patterns = [ref.path, f"{ref.path}/**"] if ref.path else None
    local = snapshot_download(
        ref.repo_id,
        repo_type=repo_type,
        revision=commit,
        allow_patterns=patterns,
        endpoint=api.endpoint,
        token=token,
    )
    return HubSnapshot(Path(local), ref.repo_id, commit)
