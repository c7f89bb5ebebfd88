"""One reconcile pass of one job: read, decide (pure), then write in a safe order.

Order matters for crash safety: the status (attempt number, phase) is written first, with the
resourceVersion the decision was made on; only then are pods deleted or created. A pass that
dies half-way is finished by the next one, which sees the new attempt number and treats
leftovers of older attempts as such.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from kubernetes.client import ApiException

from kubetune_operator import metrics
from kubetune_operator.api.spec import FineTuneJob
from kubetune_operator.api.status import TERMINAL_PHASES
from kubetune_operator.apply import ForeignObject, Writer
from kubetune_operator.fetch import Reader
from kubetune_operator.reconcile import gang, names
from kubetune_operator.reconcile import workload as wl
from kubetune_operator.reconcile.decision import Decision, Event, Upstream
from kubetune_operator.reconcile.parse import InvalidSpec, parse_job
from kubetune_operator.reconcile.plan import (
    OperatorSettings,
    cluster_problems,
    output_location,
    policy_violations,
    upstream_job,
)
from kubetune_operator.reconcile.policies.kueue import QueueView
from kubetune_operator.reconcile.status import can_coalesce, decide, invalid_spec, status_patch
from kubetune_trainer.contract import CHECKPOINT_SECRET_KEY

log = logging.getLogger(__name__)
# Writes in flight at once across all passes (pod creates of a gang go out concurrently).
APPLY_WORKERS = 32
# Least time between two status writes of one job that only refresh counts and messages.
COUNTS_INTERVAL = 1.0
# How long a pod this operator created counts as existing although the pod watch has not
# shown it yet (its ADDED event is normally a few milliseconds behind the create call).
EXPECT_SECONDS = 30.0


def refusal(err: ApiException) -> str:
    """The apiserver's reason for refusing a child as invalid, for the job's status."""
    try:
        message = json.loads(err.body or "{}").get("message") or err.reason
    except ValueError:
        message = err.body or err.reason
    return f"the apiserver refused a child object of the job: {message}"[:4096]


def declared_output(body: dict[str, Any] | None) -> str | None:
    """Where an upstream job's model goes, from its spec: validated by the API, immutable, and
    out of reach of its trainer, which can write its status. None when it cannot be parsed."""
    if body is None:
        return None
    try:
        return output_location(parse_job(body).spec)
    except InvalidSpec:
        return None


def waves(objs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Children split into what must exist first and what names it (RoleBinding, pods)."""
    later = {"RoleBinding", "Pod"}
    return [o for o in objs if o["kind"] not in later], [o for o in objs if o["kind"] in later]


def _now() -> datetime:
    return datetime.now(UTC)


class Controller:
    """Reconciles FineTuneJobs through a Reader and a Writer."""

    def __init__(
        self,
        reader: Reader,
        writer: Writer,
        settings: OperatorSettings,
        clock: Callable[[], datetime] = _now,
        apply_workers: int = APPLY_WORKERS,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.settings = settings
        self.clock = clock
        # Shared by every pass: bounds the writes in flight across all jobs.
        self.pool = ThreadPoolExecutor(max_workers=apply_workers, thread_name_prefix="apply")
        # (namespace, job) -> pod name -> when it was applied: created, not yet observed.
        self.expected: dict[tuple[str, str], dict[str, float]] = {}
        # upstream job -> jobs waiting for its model (ftj://), so its events wake them.
        self.waiting: dict[tuple[str, str], set[str]] = {}
        # (namespace, job) -> when its status was last written (time.monotonic).
        self.written_at: dict[tuple[str, str], float] = {}
        # (namespace, job) -> why its children could not be created (ForeignObject), until
        # a pass creates them; the next decision reports it.
        self.conflicts: dict[tuple[str, str], str] = {}
        # (namespace, job) -> why the apiserver refused one of its children as invalid (422):
        # the spec cannot work, and the next pass fails the job with that message.
        self.refused: dict[tuple[str, str], str] = {}

    def reconcile(self, namespace: str, name: str) -> float | None:
        """Bring one job one step closer to its spec; returns seconds until it wants another look."""
        with metrics.timed_reconcile():
            body = self.reader.job(namespace, name)
            if body is None or body["metadata"].get("deletionTimestamp"):
                metrics.record_phase(namespace, name, None)
                self.expected.pop((namespace, name), None)
                self.written_at.pop((namespace, name), None)
                self.conflicts.pop((namespace, name), None)
                self.refused.pop((namespace, name), None)
                return None
            status = body.get("status") or {}
            try:
                job = parse_job(body)
                if cluster_problems(job.spec):
                    raise InvalidSpec("; ".join(cluster_problems(job.spec)))
                if (namespace, name) in self.refused:
                    raise InvalidSpec(self.refused.pop((namespace, name)))
            except InvalidSpec as err:
                self._refuse(body, status, str(err))
                metrics.record_phase(namespace, name, "Failed")
                return None
            if not status.get("startTime") and status.get("phase") not in TERMINAL_PHASES:
                problems = policy_violations(job.spec, self.settings)  # before the first attempt
                if problems:
                    self._refuse(body, status, "; ".join(problems), "PolicyViolation")
                    metrics.record_phase(namespace, name, "Failed")
                    return None
            upstream = self._upstream(namespace, name, job.spec.model.source)
            pods = self.reader.pods(namespace, name, body["metadata"].get("uid"))
            conflict = self.conflicts.get((namespace, name))
            queue = self._queue(namespace, job)
            decision = decide(
                job,
                status,
                pods,
                self.clock(),
                upstream,
                conflict,
                self.settings,
                queue,
                self._gang_missing(job),
            )
            self._execute(body, job, status, pods, decision, queue)
            metrics.record_phase(namespace, name, decision.status.get("phase"))
            return decision.requeue_after

    def _refuse(
        self,
        body: dict[str, Any],
        status: dict[str, Any],
        message: str,
        reason: str = "InvalidSpec",
    ) -> None:
        """Fail a job whose spec cannot be planned (InvalidSpec) or that the platform policy
        does not allow (PolicyViolation): status Failed with that reason, and a Warning event
        the first time (kubectl describe shows why)."""
        generation = body["metadata"].get("generation")
        desired = invalid_spec(status, generation, message, self.clock(), reason)
        if self._write_status(body, status, desired) and status.get("phase") != "Failed":
            try:
                self.writer.post_event(body, Event("Warning", reason, message))
            except Exception:  # an event is a courtesy; the status says it all
                log.warning("could not post the %s event", reason, exc_info=True)

    def dependents(self, namespace: str, name: str) -> list[str]:
        """Jobs in `namespace` waiting for the model of job `name`."""
        return sorted(self.waiting.get((namespace, name), ()))

    def _upstream(self, namespace: str, source_job: str, source: str) -> Upstream | None:
        """State of the job an ftj:// source names (and remember who waits for it)."""
        other = upstream_job(source)
        if other is None:
            return None
        body = self.reader.job(namespace, other)
        st = (body or {}).get("status") or {}
        waiting = self.waiting.setdefault((namespace, other), set())
        if st.get("phase") in ("Succeeded", "Failed"):
            waiting.discard(source_job)
        else:
            waiting.add(source_job)
        return Upstream(name=other, phase=st.get("phase"), output_uri=declared_output(body))

    def _queue(self, namespace: str, job: FineTuneJob) -> QueueView | None:
        """The job's queue and Kueue's verdict on its Workload; None for a job in no queue."""
        queue = job.queue_name
        if queue is None:
            return None
        if not self.reader.serves(wl.GROUP, wl.VERSION):
            return QueueView(
                queue,
                problem=f"this cluster serves no Kueue Workload API ({wl.GROUP}/{wl.VERSION}): "
                "install Kueue, or take the job out of the queue",
            )
        name = job.metadata.name
        body = self.reader.workload(namespace, name, names.workload(name, job.metadata.uid))
        if body is None:
            return self._new_workload_priority(queue, job)
        verdict = wl.verdict(body)
        preemptor = None
        uid = wl.preemptor_job_uid(verdict.evicted.message) if verdict.evicted else None
        if uid:
            preemptor = self.reader.job_named_by_uid(namespace, uid)
        placement = None
        if verdict.admitted:
            placement = wl.placement(self.reader.flavors(verdict.flavors))
        return QueueView(queue, verdict, body, preemptor, placement=placement)

    def _new_workload_priority(self, queue: str, job: FineTuneJob) -> QueueView:
        """The view of a job whose Workload is yet to be made, with the priority it gets."""
        source = wl.priority_class(
            job.metadata.labels or {}, job.spec.resources.priority_class_name
        )
        if source is None:
            return QueueView(queue)
        group, kind, name, where = source
        value = self.reader.priority_value(group, name)
        if value is None:
            return QueueView(queue, problem=f"{kind} {name} ({where}) does not exist")
        return QueueView(queue, priority=wl.Priority(group, kind, name, value))

    def _gang_missing(self, job: FineTuneJob) -> str | None:
        """Why the job's PodGroup cannot be made (its scheduler's API is not served), if so."""
        g = job.spec.resources.gang
        if g is None:
            return None
        group, version = gang.APIS[g.scheduler]
        if self.reader.serves(group, version):
            return None
        return (
            f"spec.resources.gang.scheduler is {g.scheduler}, but this cluster serves no "
            f"PodGroup API {group}/{version}: install the {g.scheduler} scheduler"
        )

    def _write_status(
        self,
        body: dict[str, Any],
        status: dict[str, Any],
        desired: dict[str, Any],
        decision: Decision | None = None,
    ) -> bool:
        """Patch the status when it changed; True when a patch was written.

        A patch that only refreshes counts (`can_coalesce`) waits until COUNTS_INTERVAL after
        the job's last write; the decision is asked to look again then, and that pass writes
        whatever is current. The written job is handed to the reader (the watch shows it a
        moment later); a 409 means someone else wrote the job since it was read, so the next
        pass reads it afresh.
        """
        patch = status_patch(status, desired)
        if patch is None:
            return False
        meta = body["metadata"]
        ns, name, version = meta["namespace"], meta["name"], meta["resourceVersion"]
        if decision is not None and can_coalesce(patch, decision):
            wait = self.written_at.get((ns, name), float("-inf")) + COUNTS_INTERVAL
            now = time.monotonic()
            if wait > now:
                decision.requeue(wait - now)
                return False
        try:
            written = self.writer.patch_status(ns, name, version, patch)
        except ApiException as err:
            if err.status == 409:
                self.reader.invalidate(ns, name)
            raise
        self.written_at[(ns, name)] = time.monotonic()
        self.reader.remember(written, version)
        return True

    def _expected_pods(self, key: tuple[str, str], seen: set[str]) -> set[str]:
        """Pods created lately that the watch has not shown yet; forgets observed or old ones."""
        mine = self.expected.get(key)
        if not mine:
            return set()
        horizon = time.monotonic() - EXPECT_SECONDS
        for pod in [p for p, t in mine.items() if p in seen or t < horizon]:
            del mine[pod]
        if not mine:
            del self.expected[key]
        return set(mine)

    def _apply_all(self, objs: list[dict[str, Any]]) -> None:
        """Write the children in two concurrent waves: a 64-worker gang is two round trips
        deep instead of 70. The first wave holds what the second names: the ServiceAccount
        (pod admission refuses a pod whose account is missing) and the Role (a RoleBinding to
        a missing Role is refused unless the operator may `bind`, which it may not). The first
        error is raised once its wave is done (the pass retries)."""
        first, second = waves(objs)
        list(self.pool.map(self._write_child, first))
        list(self.pool.map(self._write_child, second))

    def _write_child(self, obj: dict[str, Any]) -> None:
        """Pods are created (one already there is fine if the job owns it: a new attempt has
        new pod names, so a pod is never updated); everything else created, or applied if it
        exists and is the job's. A namesake the job does not own raises ForeignObject."""
        if obj["kind"] == "Pod":
            if not self.writer.create(obj):
                self.writer.check_owned(obj)
        else:
            self.writer.ensure(obj)

    def _execute(
        self,
        body: dict[str, Any],
        job: Any,
        status: dict[str, Any],
        pods: list[dict[str, Any]],
        d: Decision,
        queue: QueueView | None = None,
    ) -> None:
        """Status first (guarded by resourceVersion), then the Workload, events, deletions,
        creations (the rendered children, less pods that exist or were created and are not yet
        observed)."""
        meta = body["metadata"]
        ns, name = meta["namespace"], meta["name"]
        self._write_status(body, status, d.status, d)
        if queue is not None:
            self._write_workload(job, d, queue)
        if d.restart_reason:
            metrics.RESTARTS.labels(reason=d.restart_reason).inc()
        for event in d.events:
            try:
                self.writer.post_event(body, event)
            except Exception:  # an event is a courtesy; never let it block the job
                log.warning(
                    "could not post event %s on %s/%s", event.reason, ns, name, exc_info=True
                )
        for pod in d.delete_pods:
            self.writer.delete_pod(ns, pod)
        if d.start_attempt is not None:
            seen = {p["metadata"]["name"] for p in pods}
            existing = seen | self._expected_pods((ns, name), seen)
            wanted = [
                obj
                for obj in d.children
                if not (obj["kind"] == "Pod" and obj["metadata"]["name"] in existing)
            ]
            new_pods = [o["metadata"]["name"] for o in wanted if o["kind"] == "Pod"]
            if new_pods:  # else every pod is created and merely not observed yet
                if d.checkpoint_key:  # one create per attempt; 409 is fine
                    self.writer.ensure_key_secret(
                        ns, names.CHECKPOINT_KEY_SECRET, CHECKPOINT_SECRET_KEY
                    )
                try:
                    self._apply_all(wanted)
                except ForeignObject as err:
                    if self.conflicts.get((ns, name)) != str(err):
                        d.requeue_after = None
                        d.requeue(0)  # the next pass reports it at once
                    self.conflicts[(ns, name)] = str(err)
                    return
                except ApiException as err:
                    if err.status != 422:
                        raise
                    self.refused[(ns, name)] = refusal(err)
                    d.requeue_after = None
                    d.requeue(0)
                    return
                self.conflicts.pop((ns, name), None)
                now = time.monotonic()
                self.expected.setdefault((ns, name), {}).update(dict.fromkeys(new_pods, now))
        if d.delete_job:
            self.writer.delete_job(ns, name, meta["uid"])

    def _write_workload(self, job: FineTuneJob, d: Decision, queue: QueueView) -> None:
        """Create the job's Workload, or patch its spec.active and status, as decided; each
        patch carries the resourceVersion the decision read (409: decide again)."""
        ns, name = job.metadata.namespace or "default", job.metadata.name
        if d.workload is not None:
            self.writer.create(d.workload)
            return
        if queue.body is None or (d.workload_active is None and d.workload_status is None):
            return
        wname = queue.body["metadata"]["name"]
        version = queue.body["metadata"].get("resourceVersion")
        try:
            if d.workload_active is not None:
                written = self.writer.patch_workload(
                    ns, wname, version, spec={"active": d.workload_active}
                )
                self.reader.remember_workload(name, written, version)
                version = written["metadata"]["resourceVersion"]
            if d.workload_status is not None:
                written = self.writer.patch_workload(ns, wname, version, status=d.workload_status)
                self.reader.remember_workload(name, written, version)
        except ApiException as err:
            if err.status == 409:
                self.reader.invalidate_workload(ns, name)
            raise
