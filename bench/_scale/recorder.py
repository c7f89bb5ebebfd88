"""Watch streams that timestamp what the benchmark measures, on arrival at this process.

One thread per watched collection reads the raw watch stream (no model deserialisation) and
records, per pod: first seen, first seen Running, first seen terminal; per job: first seen
finished. Both the operator and the baseline are measured by the same code at the same place.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client
from kubernetes.watch.watch import iter_resp_lines

from bench._scale.workload import job_of_pod

TERMINAL_POD_PHASES = ("Succeeded", "Failed")


@dataclass
class Timeline:
    """Arrival times (time.monotonic) of the events the benchmark measures."""

    pod_job: dict[str, str] = field(default_factory=dict)
    pod_created: dict[str, float] = field(default_factory=dict)
    pod_running: dict[str, float] = field(default_factory=dict)
    pod_terminal: dict[str, float] = field(default_factory=dict)
    job_done: dict[str, float] = field(default_factory=dict)
    job_failed: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_pod(self, pod: dict[str, Any], now: float) -> None:
        """Record a pod event (ADDED or MODIFIED)."""
        name = pod["metadata"]["name"]
        job = job_of_pod(pod)
        if job is None:
            return
        phase = (pod.get("status") or {}).get("phase")
        with self.lock:
            self.pod_job.setdefault(name, job)
            self.pod_created.setdefault(name, now)
            if phase == "Running":
                self.pod_running.setdefault(name, now)
            if phase in TERMINAL_POD_PHASES:
                self.pod_terminal.setdefault(name, now)

    def on_job(self, name: str, done: bool, failed: bool, now: float) -> None:
        """Record a job that reached its finished state (as its controller reports it)."""
        if done or failed:
            with self.lock:
                self.job_done.setdefault(name, now)
                if failed:
                    self.job_failed.add(name)

    def pods_by_job(self) -> dict[str, list[str]]:
        """Pod names grouped by job."""
        with self.lock:
            out: dict[str, list[str]] = {}
            for pod, job in self.pod_job.items():
                out.setdefault(job, []).append(pod)
            return out


def ftj_finished(obj: dict[str, Any]) -> tuple[bool, bool]:
    """(done, failed) of a FineTuneJob from its status.phase."""
    phase = (obj.get("status") or {}).get("phase")
    return phase == "Succeeded", phase == "Failed"


def job_finished(obj: dict[str, Any]) -> tuple[bool, bool]:
    """(done, failed) of a batch/v1 Job: every completion counted, or a Failed condition."""
    status = obj.get("status") or {}
    completions = (obj.get("spec") or {}).get("completions")
    done = completions is not None and status.get("succeeded", 0) >= completions
    failed = any(
        cond.get("type") == "Failed" and cond.get("status") == "True"
        for cond in status.get("conditions") or []
    )
    return done, failed


class Watcher(threading.Thread):
    """Lists then watches one collection, feeding every object to `handle` with its arrival time."""

    def __init__(
        self,
        name: str,
        list_call: Callable[..., Any],
        handle: Callable[[dict[str, Any], float], None],
    ) -> None:
        super().__init__(name=f"watch-{name}", daemon=True)
        self.list_call = list_call
        self.handle = handle
        self.stopped = threading.Event()
        self.ready = threading.Event()
        self.errors: list[str] = []

    def run(self) -> None:
        version = self._list()
        self.ready.set()
        while not self.stopped.is_set():
            try:
                version = self._watch(version)
            except Exception as err:  # a dropped stream: record it and relist
                self.errors.append(repr(err))
                time.sleep(0.5)
                version = self._list()

    def stop(self) -> None:
        self.stopped.set()

    def _list(self) -> str:
        resp = self.list_call(_preload_content=False)
        body = json.loads(resp.data)
        now = time.monotonic()
        for item in body.get("items", []):
            self.handle(item, now)
        return str(body["metadata"]["resourceVersion"])

    def _watch(self, version: str) -> str:
        resp = self.list_call(
            watch=True,
            resource_version=version,
            allow_watch_bookmarks=True,
            timeout_seconds=30,
            _preload_content=False,
        )
        try:
            for line in iter_resp_lines(resp):
                now = time.monotonic()
                event = json.loads(line)
                obj = event.get("object") or {}
                if event.get("type") == "ERROR":
                    if obj.get("code") == 410:
                        return self._list()
                    raise RuntimeError(f"watch error: {obj}")
                version = obj.get("metadata", {}).get("resourceVersion", version)
                if event.get("type") in ("ADDED", "MODIFIED"):
                    self.handle(obj, now)
                if self.stopped.is_set():
                    break
        finally:
            resp.release_conn()
        return version


def pod_watcher(api: client.ApiClient, namespace: str, timeline: Timeline) -> Watcher:
    """Watch the pods of `namespace` into `timeline`."""
    core = client.CoreV1Api(api)
    return Watcher(
        "pods",
        lambda **kw: core.list_namespaced_pod(namespace, **kw),
        timeline.on_pod,
    )


def job_watcher(
    name: str,
    list_call: Callable[..., Any],
    finished: Callable[[dict[str, Any]], tuple[bool, bool]],
    timeline: Timeline,
) -> Watcher:
    """Watch jobs (of either kind) into `timeline`, judged finished by `finished`."""

    def handle(obj: dict[str, Any], now: float) -> None:
        done, failed = finished(obj)
        timeline.on_job(obj["metadata"]["name"], done, failed, now)

    return Watcher(name, list_call, handle)
