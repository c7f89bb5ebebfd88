"""Control-plane scale benchmark: FineTuneJobs on simulated GPU nodes vs plain Indexed Jobs.

Starts a real control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler) on
127.0.0.1 plus kwok for fake GPU nodes, then runs two phases with the same gang sizes:
  1. baseline: Indexed batch/v1 Jobs, handled by kube-controller-manager's Job controller;
  2. kubetune: FineTuneJobs, handled by the operator as a child process (kopf run).
Each phase submits its jobs at --rate jobs/s, waits for every pod, then completes the jobs at
the same rate (kwok turns annotated Running pods Succeeded) and waits for each job's status.

Measured: submit -> all pods of the job created, last pod terminal -> job status finished,
(both on arrival of watch events here), controller CPU seconds and peak RSS, API requests by
verb (apiserver_request_total), errors. Fake pods' addresses are never dialled.

    python bench/control_plane.py --jobs 100
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from kubernetes import client, config  # noqa: E402

from bench._scale import apimetrics, kwok, recorder, stats, workload  # noqa: E402
from bench._scale.usage import Usage  # noqa: E402
from harness import ControlPlane, eventually, procs, start_control_plane  # noqa: E402
from harness.controlplane import admin_ssl_context, http_get  # noqa: E402
from kubetune_operator.api import constants as c  # noqa: E402

RESULTS_DIR = REPO_ROOT / "bench" / "results"
COMPLETE_ANNOTATION = "bench.kubetune.dev/complete"
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
DURATION = "apiserver_request_duration_seconds"
GOALS = {"create_p99_big": 2.0, "status_p99": 1.0, "rss_mb": 300.0}


@dataclass
class PhaseResult:
    """What one phase measured."""

    name: str
    jobs: int
    pods: int
    create: stats.Latency
    create_big: stats.Latency
    status: stats.Latency
    cpu_seconds: float
    peak_rss: int
    requests: apimetrics.Counts
    seconds: float
    mean_request_seconds: dict[tuple[str, ...], float] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    by_resource: apimetrics.Counts = field(default_factory=dict)
    # The controller's own calls by verb, where it counts them (the operator does).
    own_requests: apimetrics.Counts = field(default_factory=dict)
    # Where status time goes: the API server's p99 for the job status writes, and the
    # operator's reconcile pass p99 (from histogram buckets, so bucket-bound precision).
    status_write_p99: float | None = None
    pass_p99: float | None = None
    queue_p99: float | None = None

    @property
    def requests_total(self) -> float:
        return float(sum(self.requests.values()))


@dataclass
class Submitter:
    """How a phase creates its jobs and finds them finished."""

    name: str
    namespace: str
    create: Callable[[str, int], Any]
    list_jobs: Callable[..., Any]
    finished: Callable[[dict[str, Any]], tuple[bool, bool]]
    # apiserver_request_duration_seconds labels of the controller's job status writes
    status_write: dict[str, str] = field(default_factory=dict)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--jobs", type=int, default=100, help="jobs per phase (default 100)")
    p.add_argument("--big", type=int, default=None, help="64-worker jobs among them (default 1)")
    p.add_argument("--largest", type=int, default=8, help="gang sizes cycle 1..LARGEST (default 8)")
    p.add_argument("--rate", type=float, default=20.0, help="jobs submitted/completed per second")
    p.add_argument("--nodes", type=int, default=125, help="fake nodes (default 125)")
    p.add_argument("--gpus-per-node", type=int, default=8, help="nvidia.com/gpu per fake node")
    p.add_argument("--timeout", type=float, default=None, help="seconds per phase step")
    p.add_argument("--skip-baseline", action="store_true", help="run the operator phase only")
    p.add_argument("--output", type=Path, default=None, help="results file (markdown)")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers as JSON")
    p.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="py-spy profile of the operator (collapsed stacks)",
    )
    p.add_argument(
        "--profile-cpu",
        action="store_true",
        help="profile on-CPU samples only (default: every thread, waiting included)",
    )
    args = p.parse_args(argv)
    if args.big is None:
        args.big = 1 if args.jobs >= 10 else 0
    if args.rate <= 0:
        p.error(f"--rate must be positive, got {args.rate}")
    if args.nodes < 1 or args.gpus_per_node < 1:
        p.error("--nodes and --gpus-per-node must be at least 1")
    try:
        workload.gang_sizes(args.jobs, args.big, largest=args.largest)
    except ValueError as err:
        p.error(str(err))
    if args.timeout is None:
        args.timeout = 120 + args.jobs * 0.6
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = workload.gang_sizes(args.jobs, args.big, largest=args.largest)
    cp = start_control_plane()
    print(f"control plane {cp.git_version} up in {cp.startup_seconds:.1f}s ({cp.base_dir})")
    kwok_proc = None
    failed = True
    try:
        api = config.new_client_from_config(config_file=str(cp.kubeconfig))
        install_crd(cp)
        kwok_proc = kwok.start(cp.bin_dir, cp.kubeconfig, cp.log_dir / "kwok.log", cp.env())
        started = time.monotonic()
        create_nodes(api, args.nodes, args.gpus_per_node)
        wait_nodes_schedulable(api, args.nodes, args.timeout, kwok_proc)
        print(f"{args.nodes} fake nodes x {args.gpus_per_node} GPUs ready in "
              f"{time.monotonic() - started:.1f}s")  # fmt: skip
        results = []
        if not args.skip_baseline:
            results.append(run_phase(cp, api, baseline_submitter(api, cp), sizes, args, None))
        results.append(run_operator_phase(cp, api, sizes, args))
        report = render_report(results, args, sizes, cp.git_version)
        print(report)
        out = args.output or RESULTS_DIR / f"control_plane_n{args.jobs}.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report + "\n")
        print(f"written to {out}")
        if args.json:
            args.json.write_text(json.dumps([result_json(r) for r in results], indent=2))
        failed = any(r.errors for r in results)
        return 1 if failed else 0
    finally:
        if kwok_proc is not None:
            procs.stop(kwok_proc)
        cp.stop()
        cp.remove_files(keep_logs=failed)
        if failed:
            print(f"logs kept in {cp.log_dir}")


def install_crd(cp: ControlPlane) -> None:
    """Apply crds/ and wait until every resource the operator watches is served: a list
    sent while a new CRD's cache is still filling gets 429 "storage is (re)initializing",
    which the benchmark would count as an apiserver error of the phase."""
    crds = REPO_ROOT / "crds"
    cp.kubectl("apply", "--server-side", "-f", str(crds))
    for plural in (c.PLURAL, c.SWEEP_PLURAL, c.SCHEDULE_PLURAL):
        crd = f"crd/{plural}.{c.GROUP}"
        # kubectl wait fails outright while the CRD has no conditions yet: poll instead.
        established = ("wait", "--for=condition=Established", "--timeout=5s", crd)
        eventually(lambda argv=established: _succeeds(cp, argv), 60, crd)
        eventually(lambda argv=("get", plural, "-A"): _succeeds(cp, argv), 30, plural)


def _succeeds(cp: ControlPlane, argv: tuple[str, ...]) -> bool:
    """kubectl argv exits 0."""
    return cp.kubectl(*argv, check=False).returncode == 0


def create_nodes(api: client.ApiClient, count: int, gpus: int) -> None:
    """Create the fake GPU nodes (a few at a time)."""
    core = client.CoreV1Api(api)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: core.create_node(cast(Any, workload.fake_node(i, gpus)), _preload_content=False), range(count)))  # fmt: skip


def wait_nodes_schedulable(
    api: client.ApiClient, count: int, timeout: float, kwok_proc: Any
) -> None:
    """Every fake node Ready (kwok) and without the not-ready taint (node lifecycle controller)."""
    core = client.CoreV1Api(api)

    def ready() -> bool:
        if kwok_proc.poll() is not None:
            raise RuntimeError(f"kwok exited with {kwok_proc.returncode}")
        resp: Any = core.list_node(label_selector="type=kwok", _preload_content=False)
        nodes = json.loads(resp.data)
        good = [n for n in nodes["items"] if _schedulable(n)]
        return len(good) == count

    eventually(ready, timeout, "fake nodes Ready and untainted")


def _schedulable(node: dict[str, Any]) -> bool:
    conds = (node.get("status") or {}).get("conditions") or []
    is_ready = any(x["type"] == "Ready" and x["status"] == "True" for x in conds)
    return is_ready and not (node.get("spec") or {}).get("taints")


def baseline_submitter(api: client.ApiClient, cp: ControlPlane) -> Submitter:
    """Indexed Jobs in namespace bench-jobs."""
    ns = "bench-jobs"
    batch = client.BatchV1Api(api)
    return Submitter(
        name="Job controller (baseline)",
        namespace=ns,
        create=lambda name, n: batch.create_namespaced_job(
            ns, cast(Any, workload.indexed_job(name, n)), _preload_content=False
        ),
        list_jobs=lambda **kw: batch.list_namespaced_job(ns, **kw),
        finished=recorder.job_finished,
        status_write={"verb": "PUT", "resource": "jobs", "subresource": "status"},
    )


def operator_submitter(api: client.ApiClient) -> Submitter:
    """FineTuneJobs in namespace bench-ftj."""
    ns = "bench-ftj"
    custom = client.CustomObjectsApi(api)
    return Submitter(
        name="kubetune operator",
        namespace=ns,
        create=lambda name, n: custom.create_namespaced_custom_object(
            c.GROUP, c.VERSION, ns, c.PLURAL, workload.finetune_job(name, n), _preload_content=False
        ),
        list_jobs=lambda **kw: custom.list_namespaced_custom_object(
            c.GROUP, c.VERSION, ns, c.PLURAL, **kw
        ),
        finished=recorder.ftj_finished,
        status_write={"verb": "PATCH", "resource": c.PLURAL, "subresource": "status"},
    )


def run_operator_phase(
    cp: ControlPlane, api: client.ApiClient, sizes: list[int], args: argparse.Namespace
) -> PhaseResult:
    """Start the operator for bench-ftj, run the phase, stop it."""
    sub = operator_submitter(api)
    create_namespace(cp, sub.namespace)
    metrics_port, health_port = procs.free_port(), procs.free_port()
    env = cp.env()
    env.update(KUBETUNE_METRICS_PORT=str(metrics_port))
    argv = [
        sys.executable, "-m", "kopf", "run", "--standalone", f"--namespace={sub.namespace}",
        f"--liveness=http://127.0.0.1:{health_port}/healthz", "-m", "kubetune_operator.handlers",
    ]  # fmt: skip
    log = cp.log_dir / "operator.log"
    proc = procs.spawn(argv, log, env)
    try:
        eventually(lambda: _operator_metrics(metrics_port, proc) != "", 60, "operator up")
        profiler = (
            start_profiler(proc.pid, args.profile, cp.log_dir, idle=not args.profile_cpu)
            if args.profile
            else None
        )
        try:
            result = run_phase(cp, api, sub, sizes, args, proc.pid)
        finally:
            if profiler is not None:
                stop_profiler(profiler)
        text = _operator_metrics(metrics_port, proc)
        result.own_requests = apimetrics.sum_by(text, "kubetune_api_requests_total", "verb")
        result.pass_p99 = apimetrics.quantile(
            0.99, apimetrics.buckets(text, "kubetune_reconcile_duration_seconds_bucket")
        )
        result.queue_p99 = apimetrics.quantile(
            0.99, apimetrics.buckets(text, "kubetune_reconcile_queue_seconds_bucket")
        )
        result.errors.update(_nonzero({
            "operator API errors": apimetrics.total(text, "kubetune_api_errors_total"),
            "reconcile errors": apimetrics.total(text, "kubetune_reconcile_errors_total"),
        }))  # fmt: skip
        return result
    finally:
        procs.stop(proc)


def start_profiler(pid: int, out: Path, log_dir: Path, idle: bool) -> subprocess.Popen[bytes]:
    """py-spy sampling every thread of `pid`, written as collapsed stacks when stopped. With
    `idle`, waiting threads too (waiting on the API server is where a controller's wall time
    goes); without, only samples on the CPU (where the operator's own cost goes)."""
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        raise FileNotFoundError("--profile needs py-spy (pip install py-spy)")
    argv = [spy, "record", "--pid", str(pid), *(["--idle"] if idle else []), "--threads",
            "--rate", "50", "--format", "raw", "--output", str(out)]  # fmt: skip
    return procs.spawn(argv, log_dir / "py-spy.log")


def stop_profiler(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT makes py-spy write its output and exit."""
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(60)
    finally:
        procs.stop(proc)


def _operator_metrics(port: int, proc: Any) -> str:
    """The operator's /metrics text ('' while it does not answer); fails if it exited."""
    if proc.poll() is not None:
        raise RuntimeError(f"operator exited with {proc.returncode}")
    try:
        with NO_PROXY.open(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            return str(r.read().decode())
    except OSError:
        return ""


def create_namespace(cp: ControlPlane, ns: str) -> None:
    """A namespace with its default ServiceAccount (Job pods need it)."""
    cp.kubectl("create", "namespace", ns)
    eventually(
        lambda: cp.kubectl("get", "sa", "default", "-n", ns, check=False).returncode == 0,
        60,
        f"default ServiceAccount in {ns}",
    )


def run_phase(
    cp: ControlPlane,
    api: client.ApiClient,
    sub: Submitter,
    sizes: list[int],
    args: argparse.Namespace,
    pid: int | None,
) -> PhaseResult:
    """Submit, wait for pods, complete, wait for status; measure everything on the way."""
    if pid is None:
        create_namespace(cp, sub.namespace)
        pid = cp.processes["kube-controller-manager"].pid
    print(f"--- {sub.name}: {len(sizes)} jobs, {sum(sizes)} pods, {args.rate:g} jobs/s")
    timeline = recorder.Timeline()
    watchers = [
        recorder.pod_watcher(api, sub.namespace, timeline),
        recorder.job_watcher("jobs", sub.list_jobs, sub.finished, timeline),
    ]
    for w in watchers:
        w.start()
    for w in watchers:
        if not w.ready.wait(30):
            raise RuntimeError(f"{w.name} did not list within 30s")
    names = [f"job-{i:05d}-w{n}" for i, n in enumerate(sizes)]
    size_of = dict(zip(names, sizes, strict=True))
    before = scrape_apiserver(cp)
    usage = Usage(pid)
    usage.start()
    t0 = time.monotonic()

    submitted = paced(names, args.rate, lambda name: sub.create(name, size_of[name]))
    created = wait_pods_created(timeline, size_of, args.timeout)
    print(f"    all pods created: {len(created)}/{len(names)} jobs "
          f"({time.monotonic() - t0:.1f}s since first submit)")  # fmt: skip
    core = client.CoreV1Api(api)
    complete_all(core, sub.namespace, timeline, size_of, args.rate, args.timeout)

    cpu, rss = usage.finish()
    seconds = time.monotonic() - t0
    after = scrape_apiserver(cp)
    for w in watchers:
        w.stop()
    create_lat = {j: created[j] - submitted[j] for j in created if j in submitted}
    status_lat = status_latencies(timeline, size_of)
    errors = _nonzero({
        "jobs without all pods": len(names) - len(created),
        "jobs not finished": len(names) - len(timeline.job_done),
        "jobs failed": len(timeline.job_failed),
        "apiserver 429/5xx": apimetrics.server_errors(
            grew(after, before, lambda t: apimetrics.requests_by(t, "code"))
        ),
        "watch restarts": sum(len(w.errors) for w in watchers),
    })  # fmt: skip
    big = [v for j, v in create_lat.items() if size_of[j] == workload.BIG_GANG]
    result = PhaseResult(
        name=sub.name,
        jobs=len(names),
        pods=sum(sizes),
        create=stats.Latency.of(list(create_lat.values())),
        create_big=stats.Latency.of(big),
        status=stats.Latency.of(list(status_lat.values())),
        cpu_seconds=cpu,
        peak_rss=rss,
        requests=grew(after, before, lambda t: apimetrics.requests_by(t, "verb")),
        seconds=seconds,
        mean_request_seconds=apimetrics.mean_seconds(
            grew(after, before, lambda t: apimetrics.sum_by(t, DURATION + "_sum", "verb")),
            grew(after, before, lambda t: apimetrics.sum_by(t, DURATION + "_count", "verb")),
        ),
        errors=errors,
        by_resource=grew(after, before, lambda t: apimetrics.requests_by(t, "resource", "verb")),
        status_write_p99=apimetrics.quantile(
            0.99,
            grew(
                after,
                before,
                lambda t: apimetrics.buckets(t, DURATION + "_bucket", **sub.status_write),
            ),
        ),
    )
    print(f"    done in {seconds:.1f}s; errors: {errors or 'none'}")
    return result


def paced(names: list[str], rate: float, act: Callable[[str], Any]) -> dict[str, float]:
    """Call `act(name)` for each name at `rate` per second (a few in flight); returns when each
    call was started (time.monotonic)."""
    started: dict[str, float] = {}
    t0 = time.monotonic()

    def one(item: tuple[int, str]) -> None:
        i, name = item
        delay = t0 + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        started[name] = time.monotonic()
        act(name)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, enumerate(names)))
    return started


def wait_pods_created(
    timeline: recorder.Timeline, size_of: dict[str, int], timeout: float
) -> dict[str, float]:
    """Wait until every job has all its pods; job -> when its last pod was first seen."""
    deadline = time.monotonic() + timeout
    while True:
        done = _all_seen(timeline, size_of, timeline.pod_created)
        if len(done) == len(size_of) or time.monotonic() > deadline:
            return done
        time.sleep(0.2)


def _all_seen(
    timeline: recorder.Timeline, size_of: dict[str, int], times: dict[str, float]
) -> dict[str, float]:
    """Jobs whose every pod has a time in `times` -> the latest of those times."""
    out = {}
    for job, pods in timeline.pods_by_job().items():
        with timeline.lock:
            seen = [times[p] for p in pods if p in times]
        if job in size_of and len(seen) >= size_of[job]:
            out[job] = max(seen)
    return out


def complete_all(
    core: client.CoreV1Api,
    namespace: str,
    timeline: recorder.Timeline,
    size_of: dict[str, int],
    rate: float,
    timeout: float,
    stall_seconds: float = 5.0,
) -> None:
    """Complete jobs whose pods all run, at `rate` jobs/s, until every job finished (or timeout).

    Pods beyond the cluster's GPUs wait Pending; they run as earlier jobs finish, so this goes
    in waves when a phase has more workers than GPUs. Without a gang scheduler, partly running
    gangs can hold every free GPU while waiting for the rest of their pods; when no job has
    become complete-able for `stall_seconds`, the running pods of those gangs are completed
    one by one (their job finishes when its last pod does) to free GPUs.
    """
    requested: set[str] = set()
    done_pods: set[str] = set()
    partial: set[str] = set()
    deadline = time.monotonic() + timeout
    last_ready = time.monotonic()
    annotate = {"metadata": {"annotations": {COMPLETE_ANNOTATION: "true"}}}

    def finish(pods: list[str]) -> None:
        done_pods.update(pods)
        list(pool.map(lambda p: core.patch_namespaced_pod(p, namespace, annotate, _preload_content=False), pods))  # fmt: skip

    with ThreadPoolExecutor(4) as pool:
        while len(timeline.job_done) < len(size_of) and time.monotonic() < deadline:
            running = _all_seen(timeline, size_of, timeline.pod_running)
            ready = sorted(j for j in running if j not in requested)
            by_job = timeline.pods_by_job()
            for job in ready:
                tick = time.monotonic()
                requested.add(job)
                finish([p for p in by_job[job] if p not in done_pods])
                time.sleep(max(0.0, 1 / rate - (time.monotonic() - tick)))
            if ready:
                last_ready = time.monotonic()
            elif time.monotonic() - last_ready > stall_seconds:
                partial.update(j for j in by_job if j not in requested)
                last_ready = time.monotonic()
            with timeline.lock:
                runs = [p for j in partial for p in by_job.get(j, []) if p in timeline.pod_running]
            finish([p for p in runs if p not in done_pods])
            if not ready:
                time.sleep(0.2)


def status_latencies(timeline: recorder.Timeline, size_of: dict[str, int]) -> dict[str, float]:
    """job -> seconds from its last pod seen terminal to its status seen finished."""
    terminal = _all_seen(timeline, size_of, timeline.pod_terminal)
    return {j: timeline.job_done[j] - t for j, t in terminal.items() if j in timeline.job_done}


def scrape_apiserver(cp: ControlPlane) -> str:
    """The API server's /metrics text (request counts and duration histograms)."""
    status, body = http_get(f"{cp.server}/metrics", admin_ssl_context(cp.cert_files), timeout=30)
    if status != 200:
        raise RuntimeError(f"GET /metrics on the apiserver answered {status}")
    return body


def grew(after: str, before: str, counts: Callable[[str], apimetrics.Counts]) -> apimetrics.Counts:
    """How much the counters `counts` picks out of a scrape increased between two scrapes."""
    return apimetrics.delta(counts(after), counts(before))


def _nonzero(counts: dict[str, float]) -> dict[str, int]:
    return {k: int(v) for k, v in counts.items() if v}


VERBS = ("GET", "LIST", "WATCH", "POST", "PATCH", "PUT", "DELETE", "APPLY")


def render_report(
    results: list[PhaseResult], args: argparse.Namespace, sizes: list[int], version: str
) -> str:
    """The results as markdown: the table, requests by verb, goals, how it was run."""
    base = next((r for r in results if r.name.startswith("Job controller")), None)
    header = [
        "controller", "jobs", "pods", "create p50 s", "create p99 s", "64-pod create p99 s",
        "status p50 s", "status p99 s", "CPU s", "peak RSS MB", "API req/job",
        "controller req/job", "errors",
    ]  # fmt: skip
    rows = []
    for r in results:
        rows.append([
            r.name, str(r.jobs), str(r.pods),
            stats.fmt_seconds(r.create.p50), stats.fmt_seconds(r.create.p99),
            stats.fmt_seconds(r.create_big.p99),
            stats.fmt_seconds(r.status.p50), stats.fmt_seconds(r.status.p99),
            f"{r.cpu_seconds:.1f}", f"{r.peak_rss / 2**20:.0f}",
            f"{r.requests_total / r.jobs:.1f}",
            f"{sum(r.own_requests.values()) / r.jobs:.1f}" if r.own_requests else "-",
            ", ".join(f"{k}: {v}" for k, v in r.errors.items()) or "0",
        ])  # fmt: skip
    lines = [
        f"# Control-plane scale: N={args.jobs} jobs",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; kube-apiserver {version}; {args.nodes} kwok "
        f"nodes x {args.gpus_per_node} nvidia.com/gpu; gang sizes 1-{args.largest}"
        + (f" plus {args.big} x {workload.BIG_GANG}" if args.big else "")
        + f"; {args.rate:g} jobs/s submitted and completed; one GPU per worker.",
        "",
        stats.markdown_table(header, rows),
    ]
    if base is not None:
        ours = results[-1]
        lines += [
            "",
            "Ratio kubetune / Job controller (lower is better): "
            f"create p50 {stats.fmt_ratio(stats.ratio(ours.create.p50, base.create.p50))}, "
            f"create p99 {stats.fmt_ratio(stats.ratio(ours.create.p99, base.create.p99))}, "
            f"status p50 {stats.fmt_ratio(stats.ratio(ours.status.p50, base.status.p50))}, "
            f"status p99 {stats.fmt_ratio(stats.ratio(ours.status.p99, base.status.p99))}.",
        ]
    lines += ["", "API requests per second by verb (whole apiserver, during each phase):", ""]
    verb_rows = [
        [r.name, f"{r.seconds:.0f}"]
        + [f"{r.requests.get((v,), 0) / r.seconds:.1f}" for v in VERBS]
        + [f"{r.requests_total / r.seconds:.1f}"]
        for r in results
    ]
    lines.append(stats.markdown_table(["controller", "seconds", *VERBS, "all"], verb_rows))
    lines += [
        "",
        "Mean apiserver time per request by verb, ms (apiserver_request_duration_seconds):",
    ]
    lat_verbs = [v for v in VERBS if v != "WATCH"]
    lat_rows = [
        [r.name] + [_ms(r.mean_request_seconds.get((v,))) for v in lat_verbs] for r in results
    ]
    lines += ["", stats.markdown_table(["controller", *lat_verbs], lat_rows)]
    lines += ["", "API requests per job by resource and verb (whole apiserver, top 10 of "
              "either phase):", "", resource_table(results)]  # fmt: skip
    own = [r for r in results if r.own_requests]
    if own:
        lines += ["", "The operator's own API calls per job by verb (kubetune_api_requests_total, "
                  "watches excluded): " + "; ".join(
                      ", ".join(f"{v} {n / r.jobs:.2f}" for (v,), n in sorted(r.own_requests.items()))
                      for r in own) + "."]  # fmt: skip
    lines += ["", "Where the status time goes (p99 from histogram buckets): "
              + "; ".join(status_breakdown(r) for r in results) + "."]  # fmt: skip
    lines += ["", *goal_lines(results[-1])]
    lines += [
        "",
        "Latencies are measured on arrival of watch events at the benchmark process: create is "
        "job submitted -> last of its pods seen; status is last pod seen terminal -> job seen "
        "finished (FineTuneJob phase Succeeded; Job status.succeeded = completions). CPU and RSS "
        "are the controller process's (the operator; for the baseline the whole "
        "kube-controller-manager). API requests count every client (scheduler, kwok, the "
        "benchmark itself), so compare the phases with each other.",
        "",
        f"Command: `python bench/control_plane.py --jobs {args.jobs} --big {args.big} "
        f"--largest {args.largest} --rate {args.rate:g}"
        + (" --skip-baseline" if args.skip_baseline else "")
        + "`",
    ]
    return "\n".join(lines)


def status_breakdown(r: PhaseResult) -> str:
    """The API server's p99 for the controller's status writes, and the operator's pass p99."""
    parts = [f"{r.name}: API server status write p99 {_ms(r.status_write_p99)} ms"]
    if r.pass_p99 is not None:
        parts.append(f"reconcile pass p99 {_ms(r.pass_p99)} ms")
    if r.queue_p99 is not None:
        parts.append(f"wait before a pass p99 {_ms(r.queue_p99)} ms")
    return ", ".join(parts)


def resource_table(results: list[PhaseResult], top: int = 10) -> str:
    """Requests per job by (resource, verb), the keys busiest in any phase first."""
    keys = sorted(
        {k for r in results for k in r.by_resource},
        key=lambda k: -max(r.by_resource.get(k, 0.0) / r.jobs for r in results),
    )[:top]
    header = ["resource", "verb", *(r.name for r in results)]
    rows = [
        [k[0] or "-", k[1], *(f"{r.by_resource.get(k, 0.0) / r.jobs:.2f}" for r in results)]
        for k in keys
    ]
    return stats.markdown_table(header, rows)


def _ms(seconds: float | None) -> str:
    """Milliseconds, '-' when there were no such requests."""
    return "-" if seconds is None else f"{seconds * 1000:.0f}"


def goal_lines(ours: PhaseResult) -> list[str]:
    """Each goal of the operator, met or missed."""

    def mark(ok: bool) -> str:
        return "met" if ok else "MISSED"

    big = ours.create_big.p99
    rss_mb = ours.peak_rss / 2**20
    return [
        "Goals (operator):",
        f"- submit -> all pods of a 64-pod job created p99 <= {GOALS['create_p99_big']:g} s: "
        + ("not measured (no 64-pod job)" if math.isnan(big) else f"{big:.3f} s, {mark(big <= GOALS['create_p99_big'])}"),
        f"- pod terminal -> job status p99 <= {GOALS['status_p99']:g} s: {ours.status.p99:.3f} s, "
        f"{mark(ours.status.p99 <= GOALS['status_p99'])}",
        f"- RSS <= {GOALS['rss_mb']:g} MB: {rss_mb:.0f} MB, {mark(rss_mb <= GOALS['rss_mb'])}",
        f"- no errors: {mark(not ours.errors)}",
    ]  # fmt: skip


def result_json(r: PhaseResult) -> dict[str, Any]:
    """One phase's numbers as plain JSON data."""
    return {
        "name": r.name,
        "jobs": r.jobs,
        "pods": r.pods,
        "create": vars(r.create),
        "create_big": vars(r.create_big),
        "status": vars(r.status),
        "cpu_seconds": r.cpu_seconds,
        "peak_rss": r.peak_rss,
        "requests": {"/".join(k): v for k, v in r.requests.items()},
        "mean_request_seconds": {"/".join(k): v for k, v in r.mean_request_seconds.items()},
        "seconds": r.seconds,
        "errors": r.errors,
        "requests_by_resource": {"/".join(k): v for k, v in r.by_resource.items()},
        "own_requests": {"/".join(k): v for k, v in r.own_requests.items()},
        "status_write_p99": r.status_write_p99,
        "pass_p99": r.pass_p99,
        "queue_p99": r.queue_p99,
    }


if __name__ == "__main__":
    sys.exit(main())
