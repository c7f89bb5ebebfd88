"""Pod events wake a job only when they change what its reconcile pass observes."""

from __future__ import annotations

import copy

import pytest

from kubetune_operator.changes import WorkerChanges
from tests.unit.operator.helpers import pod

pytestmark = pytest.mark.unit


def test_changes_the_status_reads_wake_the_job() -> None:
    changes = WorkerChanges()
    assert changes.matters("ADDED", "u1", pod(0, phase="Pending", scheduled=False))
    assert changes.matters("MODIFIED", "u1", pod(0, phase="Pending", scheduled=True))
    assert changes.matters("MODIFIED", "u1", pod(0, phase="Running"))
    assert changes.matters("MODIFIED", "u1", pod(0, phase="Failed", exit_code=137))
    assert changes.matters("DELETED", "u1", pod(0, phase="Failed", exit_code=137))
    assert len(changes) == 0, "a deleted pod is forgotten"


def test_changes_no_status_reads_are_skipped() -> None:
    changes = WorkerChanges()
    running = pod(0, phase="Running")
    assert changes.matters(None, "u1", running), "the first sight of a pod always counts"
    touched = copy.deepcopy(running)
    touched["metadata"].setdefault("annotations", {})["bench/complete"] = "true"
    touched["metadata"]["resourceVersion"] = "999"
    touched["status"]["podIP"] = "10.0.0.7"
    for cond in touched["status"]["conditions"]:
        cond["lastProbeTime"] = "2026-01-01T00:00:01Z"
    assert not changes.matters("MODIFIED", "u1", touched)
    assert changes.matters("MODIFIED", "u2", touched), "another pod is tracked on its own"


def test_a_pod_being_deleted_matters() -> None:
    changes = WorkerChanges()
    changes.matters("ADDED", "u1", pod(0))
    assert changes.matters("MODIFIED", "u1", pod(0, deleting=True))
