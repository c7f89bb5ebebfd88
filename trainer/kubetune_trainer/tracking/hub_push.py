"""output.push: the exported folder (weights, tokenizer, run card, README.md model card) as one
commit to a Hugging Face Hub repository, created if missing.

The hub is output.push.endpoint (a private hub) or huggingface.co; the token is the push
secret's (KUBETUNE_HF_PUSH_TOKEN), else HF_TOKEN. One commit of explicit files, so a failed
push leaves the repository as it was.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..config import PushConfig
from ..contract import HUB_PUSH_TOKEN_ENV, HUB_TOKEN_KEY
from ..errors import BadInputError


def push(folder: Path, cfg: PushConfig, message: str) -> dict[str, str]:
    """Commit every file under folder to cfg.repo at cfg.revision; the repo and commit id."""
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    token = os.environ.get(HUB_PUSH_TOKEN_ENV) or os.environ.get(HUB_TOKEN_KEY) or None
    api = HfApi(endpoint=cfg.endpoint, token=token)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    ops = [CommitOperationAdd(str(p.relative_to(folder)), str(p)) for p in files]
    try:
        api.create_repo(cfg.repo, private=cfg.private, exist_ok=True)
        if cfg.revision != "main":
            api.create_branch(cfg.repo, branch=cfg.revision, exist_ok=True)
        info = api.create_commit(cfg.repo, ops, commit_message=message, revision=cfg.revision)
    except HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else None
        if status in (401, 403):
            raise BadInputError(
                f"spec.output.push: {api.endpoint} refused the push to {cfg.repo!r} ({status}): "
                "give spec.output.push.credentialsSecret a token with write access"
            ) from None
        raise
    return {"repo": cfg.repo, "commit": info.oid}
