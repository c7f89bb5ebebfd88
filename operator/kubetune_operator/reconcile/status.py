"""Status: from (job, its pods, the clock) to the next status and the actions that go with it.

`decide` is the whole reconcile decision as one pure function; the handlers only execute the
Decision (apply children, delete pods, patch status once, post events). Each run policy is
asked in turn; the first that ends the pass wins.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from kubetune_operator.api.spec import FineTuneJob
from kubetune_operator.api.status import TERMINAL_PHASES
from kubetune_operator.reconcile.classify import NOT_RETRIED, WorkerFailure
from kubetune_operator.reconcile.conditions import condition_status, set_condition
from kubetune_operator.reconcile.observe import Observation, first_failure, observe
from kubetune_operator.reconcile.plan import output_location, upstream_job
from kubetune_operator.reconcile.policies import (
    backoff,
    cleanup,
    deadline,
    peers,
    stall,
    startup,
    success,
    suspend,
    ttl,
)
from kubetune_operator.reconcile.timeutil import format_time, parse_duration, parse_time

OPERATOR_OWNED = (
    "phase",
    "message",
    "conditions",
    "observedGeneration",
    "startTime",
    "completionTime",
    "attempt",
    "restarts",
    "preemptions",
    "lastFailure",
    "output",
    "workers",
)
# How soon to look again while waiting for something no watch event announces.
POLL_SECONDS = 30.0
STALE_POD_SLACK = timedelta(seconds=30)
# How soon to try again to create children whose names another object holds.
CONFLICT_RETRY_SECONDS = 10.0


@dataclass(frozen=True)
class Upstream:
    """The job an ftj:// model source points at, as last seen."""

    name: str
    phase: str | None
    output_uri: str | None


@dataclass(frozen=True)
class Event:
    """A Kubernetes event to post on the job."""

    type: str
    reason: str
    message: str


@dataclass
class Decision:
    """What one reconcile pass wants done."""

    status: dict[str, Any]
    start_attempt: int | None = None
    delete_pods: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    delete_job: bool = False
    requeue_after: float | None = None
    restart_reason: str | None = None

    def requeue(self, seconds: float | None) -> None:
        """Look again in `seconds` (the earliest request wins)."""
        if seconds is None:
            return
        seconds = max(seconds, 0.5)
        self.requeue_after = (
            seconds if self.requeue_after is None else min(self.requeue_after, seconds)
        )


def owned(status: dict[str, Any]) -> dict[str, Any]:
    """The part of status the operator writes (progress belongs to the trainer)."""
    return {k: status[k] for k in OPERATOR_OWNED if status.get(k) is not None}


def status_patch(current: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any] | None:
    """Merge patch of the operator-owned keys that changed; None when nothing did."""
    cur = owned(current)
    patch = {k: v for k, v in desired.items() if cur.get(k) != v}
    patch.update({k: None for k in cur if k not in desired})
    return patch or None


# Status keys that only describe progress within a phase (worker counts, the phase message,
# condition messages); a patch of nothing else may wait a moment and ride with the next one.
COUNTS_ONLY = frozenset({"workers", "message", "conditions"})


def can_coalesce(patch: dict[str, Any], decision: Decision) -> bool:
    """True when `patch` only refreshes counts and messages within the phase: no phase,
    attempt, time or failure record, and no event. A gang's pods change one by one; writing
    each step costs the API server a status write per pod, while the changes that users,
    tools and crash safety depend on (a new phase or attempt is written before any pod is
    created or deleted for it) are never held back."""
    return set(patch) <= COUNTS_ONLY and not decision.events


def failure_record(f: WorkerFailure, attempt: int, now: str) -> dict[str, Any]:
    """status.lastFailure for a worker failure."""
    out: dict[str, Any] = {
        "reason": f.reason,
        "message": f.message,
        "pod": f.pod,
        "time": now,
        "attempt": attempt,
    }
    if f.exit_code is not None:
        out["exitCode"] = f.exit_code
    return out


class _Pass:
    """One reconcile pass: the status being built and the Decision collecting actions."""

    def __init__(self, job: FineTuneJob, status: dict[str, Any], now: datetime) -> None:
        self.job = job
        self.now = now
        self.now_s = format_time(now)
        self.gen = job.metadata.generation
        self.old_phase = status.get("phase")
        self.st = owned(status)
        self.st["observedGeneration"] = self.gen
        self.st.setdefault("attempt", 1)
        self.st.setdefault("restarts", 0)
        self.d = Decision(status=self.st)

    def cond(self, kind: str, on: bool, reason: str, message: str) -> None:
        self.st["conditions"] = set_condition(
            self.st.get("conditions", []), kind, on, reason, message, self.now_s, self.gen
        )

    def phase(self, phase: str, reason: str, message: str, warning: bool = False) -> None:
        """Set the phase; a new phase, or a new warning, also posts an event."""
        new_warning = warning and self.st.get("message") != message
        changed = phase != self.old_phase or new_warning
        self.st["phase"] = phase
        self.st["message"] = message
        if changed:
            self.d.events.append(Event("Warning" if warning else "Normal", reason, message))

    def finish(self, phase: str, reason: str, message: str, obs: Observation) -> Decision:
        """Succeeded or Failed: conditions, completion time, clean-up of the workers, TTL."""
        self.phase(phase, reason, message, warning=phase == "Failed")
        self.st.setdefault("completionTime", self.now_s)
        self.cond(phase, True, reason, message)
        self.cond("Running", False, reason, message)
        self.cond("Restarting", False, reason, message)
        self.d.delete_pods = cleanup.pods_to_delete(
            self.job.spec.run_policy.clean_pod_policy,
            (*obs.current, *obs.others),
            stop_unfinished=phase == "Failed",
        )
        self.after_finish()
        return self.d

    def after_finish(self) -> None:
        """TTL after a finished job."""
        left = ttl.seconds_until_delete(
            parse_time(self.st.get("completionTime")),
            self.job.spec.run_policy.ttl_seconds_after_finished,
            self.now,
        )
        if left is not None and left <= 0:
            self.d.delete_job = True
        else:
            self.d.requeue(left)


def _live_others(obs: Observation, now: datetime) -> list[str]:
    """Pods of other attempts that still hold resources (terminating ones for a bounded time)."""
    out = []
    for w in obs.others:
        if w.phase in ("Succeeded", "Failed") and not w.terminating:
            continue
        if w.terminating and w.deleted_at and now > w.deleted_at + STALE_POD_SLACK:
            continue
        out.append(w.name)
    return out


def decide(
    job: FineTuneJob,
    status: dict[str, Any],
    pods: list[dict[str, Any]],
    now: datetime,
    upstream: Upstream | None = None,
    conflict: str | None = None,
) -> Decision:
    """The next status of `job` and the actions to get there. `conflict`: why the last pass
    could not create the job's children (a namesake it does not own), if it could not."""
    p = _Pass(job, status, now)
    spec, rp = job.spec, job.spec.run_policy
    attempt = int(p.st["attempt"])
    obs = observe(job.metadata.name, pods, attempt, spec.resources.nodes)

    if p.old_phase in TERMINAL_PHASES:
        p.d.delete_pods = cleanup.pods_to_delete(
            rp.clean_pod_policy,
            (*obs.current, *obs.others),
            stop_unfinished=p.old_phase == "Failed",
        )
        p.st["workers"] = obs.counts
        p.after_finish()
        return p.d

    if not p.st.get("conditions"):
        p.cond("Created", True, "Created", "the job was accepted")

    if upstream_job(spec.model.source) is not None and (
        upstream is None or upstream.phase != "Succeeded"
    ):
        name = upstream_job(spec.model.source)
        if upstream is not None and upstream.phase == "Failed":
            return p.finish("Failed", "UpstreamFailed", f"model source job {name} failed", obs)
        p.phase("Pending", "WaitingForModel", f"waiting for FineTuneJob {name} to succeed")
        p.d.requeue(POLL_SECONDS)
        return p.d

    if rp.suspend:
        p.d.delete_pods = [w.name for w in (*obs.current, *obs.others) if not w.terminating]
        reason, msg, loses = suspend.suspended_message(
            spec.checkpoint is not None, p.st.get("startTime") is not None
        )
        p.phase("Suspended", reason, msg, warning=loses)
        p.cond("Suspended", True, reason, msg)
        p.cond("Running", False, "Suspended", "suspended")
        p.st["workers"] = obs.counts
        return p.d

    start = parse_time(p.st.get("startTime"))
    if suspend.is_resuming(rp.suspend, p.old_phase):
        if start is not None:  # an attempt ran before the suspension: the next one resumes it
            attempt += 1
            p.st["attempt"] = attempt
        p.cond(
            "Suspended",
            False,
            "Resumed",
            "resumed from the latest checkpoint"
            if spec.checkpoint is not None
            else "resumed from step 0 (no spec.checkpoint)",
        )
        p.d.events.append(Event("Normal", "Resumed", f"starting attempt {attempt}"))
        obs = observe(job.metadata.name, pods, attempt, spec.resources.nodes)

    resumed = _resumed_at(p.st.get("conditions", []))
    left = deadline.seconds_left(
        deadline.counting_from(start, resumed), rp.active_deadline_seconds, now
    )
    if left is not None and left <= 0:
        msg = f"the job ran longer than activeDeadlineSeconds={rp.active_deadline_seconds}"
        p.st["lastFailure"] = {
            "reason": "DeadlineExceeded",
            "message": msg,
            "time": p.now_s,
            "attempt": attempt,
        }
        return p.finish("Failed", "DeadlineExceeded", msg, obs)
    p.d.requeue(left)

    ran = p.old_phase in ("Initializing", "Running")
    failure = first_failure(obs, running_attempt=ran)
    if failure is not None and (wait := _hold_back(obs, failure, now)) > 0:
        p.d.requeue(wait)
        return p.d  # meanwhile nothing changes: no phase flip, no new pods
    if failure is None and p.old_phase == "Running":
        failure = _stalled(p, obs, status.get("progress"))
    if failure is not None:
        return _end_attempt(p, obs, failure)

    counts = obs.counts
    p.st["workers"] = counts
    if counts["succeeded"] == spec.resources.nodes:
        p.st["output"] = success.output_status(output_location(spec), status.get("progress"))
        p.cond("Restarting", False, "Succeeded", "finished")
        return p.finish("Succeeded", *success.outcome(attempt, status.get("progress")), obs)

    stale = _live_others(obs, now)
    if stale:
        p.d.delete_pods = [w.name for w in obs.others if w.name in stale and not w.terminating]
        p.phase(
            "Restarting",
            "Restarting",
            f"waiting for {len(stale)} pod(s) of an earlier attempt to exit",
        )
        p.d.requeue(5)
        return p.d

    blocked = _startup_error(p, obs)
    if blocked is not None and rp.fail_on_startup_error:
        return _end_attempt(p, obs, blocked)
    if obs.missing:
        p.d.start_attempt = attempt
    if conflict is not None:  # keep trying: the namesake may be removed
        p.phase("Pending", "NameConflict", conflict, warning=True)
        p.cond("NameConflict", True, "NameConflict", conflict)
        p.d.requeue(CONFLICT_RETRY_SECONDS)
        return p.d
    if condition_status(p.st.get("conditions", []), "NameConflict") == "True":
        p.cond("NameConflict", False, "Resolved", "every child of the job is its own")
    if start is None:
        p.st["startTime"] = p.now_s
        p.d.requeue(deadline.seconds_left(now, rp.active_deadline_seconds, now))
    _progress_phase(p, obs, attempt)
    return p.d


def _resumed_at(conditions: list[dict[str, Any]]) -> datetime | None:
    """When the job was last resumed (Suspended turned False), if ever."""
    for cond in conditions:
        if cond.get("type") == "Suspended" and cond.get("status") == "False":
            return parse_time(cond.get("lastTransitionTime"))
    return None


def _stalled(p: _Pass, obs: Observation, progress: dict[str, Any] | None) -> WorkerFailure | None:
    """A Stalled failure when progress stopped advancing; else schedule the next look."""
    timeout = parse_duration(p.job.spec.run_policy.stall_timeout)
    last = stall.last_progress(progress, obs.attempt, obs.attempt_started)
    left = stall.seconds_until_stalled(last, timeout, p.now)
    if left is None:
        return None
    if left > 0:
        p.d.requeue(left)
        return None
    step = (progress or {}).get("step")
    return WorkerFailure(
        reason="Stalled",
        message=f"no progress for {p.job.spec.run_policy.stall_timeout} (stuck at step {step})",
        exit_code=None,
        pod=obs.current[0].name if obs.current else "",
    )


def _startup_error(p: _Pass, obs: Observation) -> WorkerFailure | None:
    """The first worker of the attempt that could not start within startupErrorTimeout.

    Once one has: condition StartupError, status.lastFailure and a Warning event (once); the
    condition turns False when no worker is stuck any more (the user fixed the image or the
    Secret). Before the timeout, schedule a look for when it runs out.
    """
    timeout = parse_duration(p.job.spec.run_policy.startup_error_timeout)
    stuck: WorkerFailure | None = None
    for w in obs.current:
        cls = startup.failure_class(w.waiting_reason)
        if cls is None or w.terminating:
            continue
        left = startup.seconds_until_error(w.scheduled_at or w.created, timeout, p.now)
        if left > 0:
            p.d.requeue(left)
        elif stuck is None:
            stuck = WorkerFailure(
                reason=cls,
                message=f"worker {w.name} could not start for "
                f"{p.job.spec.run_policy.startup_error_timeout}: {w.waiting_problem}"[:1024],
                exit_code=None,
                pod=w.name,
            )
    was = condition_status(p.st.get("conditions", []), "StartupError")
    if stuck is None:
        if was == "True":
            p.cond("StartupError", False, "Started", "no worker of the attempt is failing to start")
        return None
    if was != "True":
        p.d.events.append(Event("Warning", stuck.reason, stuck.message))
        p.st["lastFailure"] = failure_record(stuck, obs.attempt, p.now_s)
    p.cond("StartupError", True, stuck.reason, stuck.message)
    return stuck


def _hold_back(obs: Observation, failure: WorkerFailure, now: datetime) -> float:
    """Seconds to wait for a more specific failure from a worker that still runs."""
    running = any(w.phase not in ("Succeeded", "Failed") for w in obs.current)
    return peers.seconds_to_wait(failure.reason, failure.finished, running, now)


def _end_attempt(p: _Pass, obs: Observation, failure: WorkerFailure) -> Decision:
    """Gang semantics: the whole attempt goes; retry it or fail the job.

    A failure spends backoffLimit; a preemption or eviction spends preemptionLimit instead,
    so a job that Kueue preempts again and again keeps resuming from its checkpoint.
    """
    rp = p.job.spec.run_policy
    attempt = obs.attempt
    p.st["lastFailure"] = failure_record(failure, attempt, p.now_s)
    p.st["workers"] = obs.counts
    restarts = int(p.st.get("restarts") or 0)
    preemptions = int(p.st.get("preemptions") or 0)
    disrupted = backoff.is_disruption(failure.reason)
    if failure.reason in NOT_RETRIED:
        return p.finish("Failed", failure.reason, f"not retried: {failure.message}", obs)
    if disrupted and not backoff.may_resume(preemptions, rp.preemption_limit):
        msg = (
            f"attempt {attempt} ended ({failure.reason}) and preemptionLimit="
            f"{rp.preemption_limit} is used up: {failure.message}"
        )
        return p.finish("Failed", "PreemptionLimitExceeded", msg, obs)
    if not disrupted and not backoff.may_restart(restarts - preemptions, rp.backoff_limit):
        msg = (
            f"attempt {attempt} failed ({failure.reason}) and backoffLimit={rp.backoff_limit} "
            f"is used up: {failure.message}"
        )
        return p.finish("Failed", "BackoffLimitExceeded", msg, obs)
    p.st["attempt"] = attempt + 1
    p.st["restarts"] = restarts + 1
    if disrupted:
        p.st["preemptions"] = preemptions + 1
    p.d.delete_pods = [w.name for w in obs.current if not w.terminating]
    p.d.restart_reason = failure.reason
    msg = f"attempt {attempt} ended ({failure.reason}): {failure.message}; starting attempt {attempt + 1}"
    p.phase("Restarting", failure.reason, msg, warning=True)
    p.cond("Restarting", True, failure.reason, msg)
    p.cond("Running", False, failure.reason, msg)
    p.d.requeue(1)
    return p.d


def _progress_phase(p: _Pass, obs: Observation, attempt: int) -> None:
    """Pending -> Initializing -> Running for the current attempt, from the worker counts."""
    counts = p.st["workers"]
    nodes = counts["total"]
    problems = [f"{w.name}: {w.waiting_problem}" for w in obs.current if w.waiting_problem]
    if counts["running"] + counts["succeeded"] == nodes and not obs.missing:
        p.phase("Running", "Running", f"attempt {attempt}: all {nodes} workers running")
        p.cond("Running", True, "AllWorkersRunning", f"attempt {attempt}")
        p.cond("Restarting", False, "Running", f"attempt {attempt} is running")
        return
    scheduled = sum(w.scheduled for w in obs.current)
    if problems:
        p.phase("Pending", "WorkerProblem", "; ".join(problems)[:1024], warning=True)
    elif scheduled == nodes:
        p.phase(
            "Initializing",
            "Initializing",
            f"attempt {attempt}: {counts['running']}/{nodes} workers running",
        )
    elif attempt > 1 and p.old_phase == "Restarting":
        p.phase(
            "Restarting",
            "Restarting",
            f"attempt {attempt}: waiting for {nodes - scheduled} worker(s) to be scheduled",
        )
    else:
        p.phase(
            "Pending",
            "Pending",
            f"attempt {attempt}: waiting for {nodes - scheduled} worker(s) to be scheduled",
        )
    p.cond("Running", False, "WaitingForWorkers", f"{counts['running']}/{nodes} workers running")


def invalid_spec(
    job_status: dict[str, Any],
    generation: int | None,
    message: str,
    now: datetime,
    reason: str = "InvalidSpec",
) -> dict[str, Any]:
    """Status of a job whose spec cannot be planned (reason InvalidSpec) or that the platform
    policy does not allow (PolicyViolation): Failed before any worker starts."""
    st = owned(job_status)
    now_s = format_time(now)
    st.update(phase="Failed", message=message, observedGeneration=generation)
    st.setdefault("completionTime", now_s)
    st["lastFailure"] = {"reason": reason, "message": message[:4096], "time": now_s}
    st["conditions"] = set_condition(
        st.get("conditions", []), "Failed", True, reason, message[:4096], now_s, generation
    )
    return st
