"""What one reconcile pass decides, and the state the run policies build it in.

A `Pass` starts from the job, its current status and its pods; each policy step
(reconcile/policies/) reads it, may set status fields, conditions, deletions and events, and
says whether the pass ends there. What comes out is a `Decision`: the next status and every
action that goes with it, rendered children included, for the controller to execute.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from kubetune_operator.api.spec import FineTuneJob
from kubetune_operator.reconcile.classify import WorkerFailure
from kubetune_operator.reconcile.conditions import set_condition
from kubetune_operator.reconcile.observe import Observation, observe
from kubetune_operator.reconcile.plan import OperatorSettings
from kubetune_operator.reconcile.timeutil import format_time

if TYPE_CHECKING:
    from kubetune_operator.reconcile.policies.kueue import QueueView

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
    children: list[dict[str, Any]] = field(default_factory=list)
    """The rendered objects of `start_attempt` (its pods last), to create where missing."""
    checkpoint_key: bool = False
    """The children save checkpoints (spec.checkpoint or the operator's default store): the
    namespace's checkpoint key Secret must exist before them."""
    delete_pods: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    delete_job: bool = False
    requeue_after: float | None = None
    restart_reason: str | None = None
    workload: dict[str, Any] | None = None
    """The job's Kueue Workload (rendered), to create: active unless the job is suspended."""
    workload_active: bool | None = None
    """Set the Workload's spec.active (False while the job is suspended)."""
    workload_status: dict[str, Any] | None = None
    """Merge patch of the Workload's status (quota handed back, Finished, PodsReady)."""

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


class Pass:
    """One reconcile pass: what it read, the status being built, and the Decision so far."""

    def __init__(
        self,
        job: FineTuneJob,
        status: dict[str, Any],
        pods: list[dict[str, Any]],
        now: datetime,
        upstream: Upstream | None = None,
        settings: OperatorSettings | None = None,
        conflict: str | None = None,
        queue: QueueView | None = None,
        gang_missing: str | None = None,
    ) -> None:
        self.job = job
        self.spec = job.spec
        self.run_policy = job.spec.run_policy
        self.pods = pods
        self.now = now
        self.now_s = format_time(now)
        self.upstream = upstream
        self.conflict = conflict
        """Why the last pass could not create the job's children, if it could not."""
        self.queue = queue
        """What is known of the job's Kueue queue and Workload, for a job in a queue."""
        self.gang_missing = gang_missing
        """Why the PodGroup of the job's gang cannot be made (its scheduler's API is not
        served), if it cannot."""
        self.settings = settings or OperatorSettings()
        self.gen = job.metadata.generation
        self.old_phase: str | None = status.get("phase")
        self.progress: dict[str, Any] | None = status.get("progress")
        self.st = owned(status)
        self.st["observedGeneration"] = self.gen
        self.st.setdefault("attempt", 1)
        self.st.setdefault("restarts", 0)
        self.d = Decision(status=self.st)
        self.attempt = int(self.st["attempt"])
        self.obs = self.observe()
        self.failure: WorkerFailure | None = None
        """The failure that ends the current attempt, once a step found one."""

    def observe(self) -> Observation:
        """The pods split into the current attempt (self.attempt) and the others."""
        self.obs = observe(
            self.job.metadata.name, self.pods, self.attempt, self.spec.resources.nodes
        )
        return self.obs

    def cond(self, kind: str, on: bool, reason: str, message: str) -> None:
        """Set condition `kind`."""
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


Step = Callable[[Pass], bool]
"""A policy step: reads and updates the pass; True when the pass ends with it."""
