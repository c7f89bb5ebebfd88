"""The operator process (`kopf run`) with a sweep and a schedule, killed and restarted while they
run: every trial and run exists exactly once (same uid throughout), and both finish.

No kubelet here: the test plays it (worker pods Running, then Succeeded) and plays the trainer
(progress and benchmark in the job's status), as tests/k8s/operator does.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from harness import eventually
from kubetune_operator.api import constants as c
from tests.k8s.operator.cluster import BASE_SPEC, Cluster, Operator

pytestmark = pytest.mark.k8s


def template() -> dict[str, Any]:
    spec = copy.deepcopy(BASE_SPEC)
    spec["resources"] = {"nodes": 1, "gpusPerNode": 0}
    spec["dataset"] = {**spec["dataset"], "validationSplit": 0.1}
    spec["method"] = {"type": "lora", "lora": {"r": 8}}
    return {"spec": spec}


def children(cluster: Cluster, label: str, parent: str) -> dict[str, str]:
    """name -> uid of the parent's jobs."""
    items = cluster.custom.list_namespaced_custom_object(
        c.GROUP, c.VERSION, cluster.ns, c.PLURAL, label_selector=f"{label}={parent}"
    )["items"]
    return {j["metadata"]["name"]: j["metadata"]["uid"] for j in items}


def finish(cluster: Cluster, op: Operator, job: str, status: dict[str, Any]) -> None:
    """Play kubelet and trainer: the job's worker runs and exits 0 after reporting `status`."""
    pod = eventually(lambda: cluster.pod_names(job) or None, 60, f"{job}'s worker", op.log)[0]
    cluster.custom.patch_namespaced_custom_object_status(
        c.GROUP, c.VERSION, cluster.ns, c.PLURAL, job, {"status": status}
    )
    cluster.set_pod(pod, "Running")
    cluster.set_pod(pod, "Succeeded")


def exactly(cluster: Cluster, label: str, parent: str, n: int) -> Any:
    """A probe for `eventually`: the parent's jobs once there are n of them."""
    return lambda: jobs if len(jobs := children(cluster, label, parent)) == n else None


def parent_status(cluster: Cluster, plural: str, name: str) -> dict[str, Any]:
    body = cluster.custom.get_namespaced_custom_object(c.GROUP, c.VERSION, cluster.ns, plural, name)
    return dict(body.get("status") or {})


def test_sweep_and_schedule_survive_operator_restarts_without_duplicates(
    cluster: Cluster, operator: Operator
) -> None:
    sweep = {
        "apiVersion": c.API_VERSION, "kind": c.SWEEP_KIND, "metadata": {"name": "grid"},
        "spec": {"template": template(), "parallelism": 2,
                 "parameters": [{"path": "training.learningRate", "values": [0.001, 0.01]},
                                {"path": "method.lora.r", "values": [4, 8]}]},
    }  # fmt: skip
    schedule = {
        "apiVersion": c.API_VERSION, "kind": c.SCHEDULE_KIND, "metadata": {"name": "every"},
        "spec": {"schedule": "* * * * *", "template": template(),
                 "gate": {"benchmark": "file:///data/bench.jsonl"}},
    }  # fmt: skip
    for plural, body in ((c.SWEEP_PLURAL, sweep), (c.SCHEDULE_PLURAL, schedule)):
        cluster.custom.create_namespaced_custom_object(c.GROUP, c.VERSION, cluster.ns, plural, body)

    first = eventually(exactly(cluster, c.LABEL_SWEEP, "grid", 2), 60, "two trials", operator.log)
    seen = dict(first)
    runs = eventually(lambda: children(cluster, c.LABEL_SCHEDULE, "every") or None, 90,
                      "the first run (at the next minute)", operator.log)  # fmt: skip
    seen_runs = dict(runs)
    for round_, name in enumerate(sorted(first)):
        operator.kill()
        operator.start(min_passes=1)
        loss = 0.5 + round_ / 10
        finish(cluster, operator, name, {"progress": {"evals": [{"step": 10, "loss": loss}],
                                                      "evalLoss": loss, "step": 10}})  # fmt: skip
        now = children(cluster, c.LABEL_SWEEP, "grid")
        assert all(now[n] == uid for n, uid in seen.items() if n in now), "a trial was re-created"
        seen.update(now)
    all_four = eventually(
        exactly(cluster, c.LABEL_SWEEP, "grid", 4), 60, "trials 2, 3", operator.log
    )
    operator.kill()
    operator.start(min_passes=1)
    for i, name in enumerate(("grid-t2", "grid-t3")):
        finish(cluster, operator, name, {"progress": {"evals": [{"step": 10, "loss": 0.3 - i / 10}],
                                                      "evalLoss": 0.3 - i / 10, "step": 10}})  # fmt: skip
    st = eventually(lambda: (s := parent_status(cluster, c.SWEEP_PLURAL, "grid")).get("phase") == "Succeeded" and s,
                    60, "sweep Succeeded", operator.log)  # fmt: skip
    assert children(cluster, c.LABEL_SWEEP, "grid") == all_four
    assert [t["name"] for t in st["trials"]] == ["grid-t0", "grid-t1", "grid-t2", "grid-t3"]
    assert st["best"]["trial"] == "grid-t3" and st["summary"] == "4/4 done: 4 succeeded"

    # The schedule's first run, finished and gated across a restart, made once.
    [run] = sorted(seen_runs)
    operator.kill()
    operator.start(min_passes=1)
    bench = {
        "sha256": "a" * 64,
        "records": 3,
        "before": {"evalLoss": 2.0},
        "after": {"evalLoss": 1.0},
    }
    finish(cluster, operator, run, {"benchmark": bench})
    record = eventually(
        lambda: next((r for r in parent_status(cluster, c.SCHEDULE_PLURAL, "every").get("runs", [])
                      if r["name"] == run and r.get("promoted") is not None), None),
        60, "the run gated", operator.log,
    )  # fmt: skip
    assert record["promoted"] is True
    made = children(cluster, c.LABEL_SCHEDULE, "every")
    assert made[run] == seen_runs[run]
    numbers = sorted(int(n.rsplit("-r", 1)[1]) for n in made)
    assert numbers == list(range(1, len(numbers) + 1)), made  # no gap, no duplicate
