"""The control-plane benchmark's pure parts: percentiles, gang sizes, manifests, metrics parsing."""

from __future__ import annotations

import math

import pytest

from bench import control_plane as bench
from bench._scale import apimetrics, recorder, stats, workload
from kubetune_operator.api import constants as c


@pytest.mark.unit
def test_percentile_is_nearest_rank() -> None:
    samples = [float(i) for i in range(1, 101)]
    assert stats.percentile(samples, 50) == 50.0
    assert stats.percentile(samples, 99) == 99.0
    assert stats.percentile([3.0], 99) == 3.0
    assert math.isnan(stats.percentile([], 50))
    with pytest.raises(ValueError, match=r"within 0\.\.100"):
        stats.percentile(samples, 101)


@pytest.mark.unit
def test_ratio_is_unknown_without_a_baseline() -> None:
    assert stats.ratio(2.0, 1.0) == 2.0
    assert math.isnan(stats.ratio(1.0, 0.0))
    assert math.isnan(stats.ratio(math.nan, 1.0))
    assert stats.fmt_ratio(math.nan) == "-"


@pytest.mark.unit
def test_gang_sizes_cycle_one_to_eight_with_big_jobs_spread_from_the_first() -> None:
    sizes = workload.gang_sizes(10, 1)
    assert sizes == [64, 2, 3, 4, 5, 6, 7, 8, 1, 2]
    assert workload.gang_sizes(10, 2) == [64, 2, 3, 4, 5, 64, 7, 8, 1, 2]
    assert workload.gang_sizes(3, 3) == [64, 64, 64]
    assert sum(workload.gang_sizes(1000, 0)) == 4500
    with pytest.raises(ValueError, match="--big"):
        workload.gang_sizes(3, 4)
    with pytest.raises(ValueError, match="--jobs"):
        workload.gang_sizes(0, 0)


@pytest.mark.unit
def test_fake_nodes_are_annotated_for_kwok_and_get_distinct_pod_cidrs() -> None:
    a, b = workload.fake_node(0, 8), workload.fake_node(300, 8)
    assert a["metadata"]["annotations"] == {"kwok.x-k8s.io/node": "fake"}
    assert a["status"]["allocatable"]["nvidia.com/gpu"] == "8"
    assert a["spec"]["podCIDR"] != b["spec"]["podCIDR"]


@pytest.mark.unit
def test_both_kinds_of_job_ask_one_gpu_per_worker() -> None:
    ftj = workload.finetune_job("a", 4)
    job = workload.indexed_job("a", 4)
    assert ftj["spec"]["resources"] == {"nodes": 4, "gpusPerNode": 1, "image": workload.IMAGE}
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 4
    limits = job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits == {"nvidia.com/gpu": "1"}


@pytest.mark.unit
def test_pods_map_to_their_job_by_either_label() -> None:
    ours = {"metadata": {"labels": {c.LABEL_JOB: "x"}}}
    theirs = {"metadata": {"labels": {"batch.kubernetes.io/job-name": "y"}}}
    assert workload.job_of_pod(ours) == "x"
    assert workload.job_of_pod(theirs) == "y"
    assert workload.job_of_pod({"metadata": {}}) is None


@pytest.mark.unit
def test_request_counts_by_verb_and_their_increase() -> None:
    before = apimetrics.requests_by(
        'apiserver_request_total{code="200",resource="pods",verb="LIST"} 3\n'
        'apiserver_request_total{code="201",resource="pods",verb="POST"} 1\n',
        "verb",
    )
    text = (
        "# HELP apiserver_request_total Counter\n"
        'apiserver_request_total{code="200",resource="pods",verb="LIST"} 5\n'
        'apiserver_request_total{code="200",resource="jobs",verb="LIST"} 2\n'
        'apiserver_request_total{code="201",resource="pods",verb="POST"} 1\n'
        'apiserver_request_total{code="429",resource="pods",verb="POST"} 4\n'
        'apiserver_request_total_other{verb="LIST"} 100\n'
    )
    after = apimetrics.requests_by(text, "verb")
    assert after == {("LIST",): 7.0, ("POST",): 5.0}
    assert apimetrics.delta(after, before) == {("LIST",): 4.0, ("POST",): 4.0}
    assert apimetrics.server_errors(apimetrics.requests_by(text, "code")) == 4


@pytest.mark.unit
def test_finished_jobs_of_either_kind() -> None:
    assert recorder.ftj_finished({"status": {"phase": "Succeeded"}}) == (True, False)
    assert recorder.ftj_finished({"status": {"phase": "Running"}}) == (False, False)
    job = {"spec": {"completions": 2}, "status": {"succeeded": 2}}
    assert recorder.job_finished(job) == (True, False)
    failed = {
        "spec": {"completions": 2},
        "status": {"conditions": [{"type": "Failed", "status": "True"}]},
    }
    assert recorder.job_finished(failed) == (False, True)


@pytest.mark.unit
def test_timeline_keeps_first_arrival_of_each_state() -> None:
    t = recorder.Timeline()
    pod = {"metadata": {"name": "p", "labels": {c.LABEL_JOB: "j"}}, "status": {"phase": "Pending"}}
    t.on_pod(pod, 1.0)
    t.on_pod({**pod, "status": {"phase": "Running"}}, 2.0)
    t.on_pod({**pod, "status": {"phase": "Succeeded"}}, 3.0)
    t.on_pod({**pod, "status": {"phase": "Succeeded"}}, 4.0)
    assert (t.pod_created["p"], t.pod_running["p"], t.pod_terminal["p"]) == (1.0, 2.0, 3.0)
    assert t.pods_by_job() == {"j": ["p"]}


@pytest.mark.unit
def test_completion_breaks_a_gang_deadlock_by_finishing_running_pods() -> None:
    """Job a has one pod Running and one Pending (no GPU left); job b runs fully. b is completed
    as a job; after the stall, a's running pod is completed on its own to free its GPU."""
    t = recorder.Timeline()

    def pod(name: str, job: str, phase: str) -> dict[str, object]:
        return {
            "metadata": {"name": name, "labels": {c.LABEL_JOB: job}},
            "status": {"phase": phase},
        }

    for name, job, phase in [
        ("a-0", "a", "Running"),
        ("a-1", "a", "Pending"),
        ("b-0", "b", "Running"),
    ]:
        t.on_pod(pod(name, job, phase), 0.0)
    patched: list[str] = []

    class Core:
        def patch_namespaced_pod(self, name: str, ns: str, body: object, **_: object) -> None:
            patched.append(name)
            job = "b" if name.startswith("b") else "a"
            t.on_pod(pod(name, job, "Succeeded"), 1.0)
            if job == "b":
                t.on_job("b", True, False, 1.0)

    bench.complete_all(Core(), "ns", t, {"a": 2, "b": 1}, 100.0, 1.5, stall_seconds=0.2)  # type: ignore[arg-type]
    assert patched[0] == "b-0"
    assert "a-0" in patched and "a-1" not in patched
    assert patched.count("a-0") == 1


@pytest.mark.unit
def test_histogram_quantiles_interpolate_inside_the_bucket() -> None:
    text = "\n".join([
        'lat_bucket{verb="PATCH",le="0.1"} 50',
        'lat_bucket{verb="PATCH",le="0.5"} 90',
        'lat_bucket{verb="PATCH",le="1"} 100',
        'lat_bucket{verb="PATCH",le="+Inf"} 100',
        'lat_bucket{verb="GET",le="0.1"} 1000',
        'lat_bucket{verb="GET",le="+Inf"} 1000',
    ])  # fmt: skip
    patch = apimetrics.buckets(text, "lat_bucket", verb="PATCH")
    assert patch[("0.1",)] == 50 and ("+Inf",) in patch
    assert apimetrics.quantile(0.5, patch) == pytest.approx(0.1)
    assert apimetrics.quantile(0.7, patch) == pytest.approx(0.3)
    assert apimetrics.quantile(0.99, patch) == pytest.approx(0.95)
    assert apimetrics.quantile(0.99, {}) is None
