"""FineTuneJobs made from a template: a sweep's trials and a schedule's runs.

Pure builders on the template as the user wrote it (the apiserver's copy, defaults filled in):
set fields by path, give each job its own output and checkpoint folder (<uri>/<job name>, so
trials never resume each other's checkpoints), and make the job owned by its parent, labelled
with it, and named deterministically, so a restarted operator finds what it made.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import ValidationError

from kubetune_operator.api import constants as c
from kubetune_operator.api.spec import FineTuneJobSpec
from kubetune_operator.api.template import set_path, under
from kubetune_operator.reconcile.parse import describe_validation_error


def trial_name(sweep: str, index: int) -> str:
    """Trial `index` of a sweep: <sweep>-t<index>."""
    return f"{sweep}-t{index}"


def run_name(schedule: str, number: int) -> str:
    """Run `number` of a schedule: <schedule>-r<number>."""
    return f"{schedule}-r{number}"


def with_values(spec: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """The spec with each path set to its value."""
    out = spec
    for path, value in values.items():
        out = set_path(out, path, value)
    return out


def own_folders(spec: dict[str, Any], job: str) -> dict[str, Any]:
    """The spec with output and checkpoint URIs moved one folder down, to <uri>/<job>."""
    out = copy.deepcopy(spec)
    for key in ("output", "checkpoint"):
        section = out.get(key)
        if isinstance(section, dict) and isinstance(section.get("uri"), str):
            section["uri"] = under(section["uri"], job)
    return out


def spec_problem(spec: dict[str, Any]) -> str | None:
    """Why the spec is not a valid FineTuneJob spec (fields named), or None."""
    try:
        FineTuneJobSpec.model_validate(spec)
    except ValidationError as err:
        return describe_validation_error(err)
    return None


def owner_reference(kind: str, name: str, uid: str | None) -> dict[str, Any]:
    """Controller reference to the parent: deleting it deletes its jobs."""
    return {
        "apiVersion": c.API_VERSION,
        "kind": kind,
        "name": name,
        "uid": uid or "",
        "controller": True,
        "blockOwnerDeletion": True,
    }


def job_manifest(
    name: str,
    namespace: str,
    spec: dict[str, Any],
    template_meta: dict[str, Any] | None,
    owner: dict[str, Any],
    labels: dict[str, str],
) -> dict[str, Any]:
    """A FineTuneJob with the template's labels and annotations, ours on top, and its owner."""
    meta = template_meta or {}
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "labels": {**(meta.get("labels") or {}), **labels, c.LABEL_MANAGED_BY: c.MANAGED_BY},
        "ownerReferences": [owner],
    }
    if meta.get("annotations"):
        metadata["annotations"] = dict(meta["annotations"])
    return {"apiVersion": c.API_VERSION, "kind": c.KIND, "metadata": metadata, "spec": spec}
