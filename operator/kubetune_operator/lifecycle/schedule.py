"""A schedule's reconcile decision: from (the schedule, its run jobs, its data-watch pods, the
clock) to the next status and what to create or delete. Pure; the controller executes it.

status.runs is the record of which runs exist (a run is written down before its job is made,
under the name <schedule>-r<N> with N from status.nextRun), status.promoted the model that
deployments read. A finished run is gated once, when it is first seen finished.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from kubetune_operator.api import constants as c
from kubetune_operator.api.schedule import FineTuneSchedule
from kubetune_operator.lifecycle import children, cron, datawatch, gate
from kubetune_operator.reconcile.decision import Event
from kubetune_operator.reconcile.plan import OperatorSettings
from kubetune_operator.reconcile.timeutil import format_time, parse_duration, parse_time

ACTIVE = ("Pending", "Running")
# How soon to look again while a data-watch pod runs (its pod events normally come first).
WATCH_POLL_SECONDS = 60.0


@dataclass
class ScheduleDecision:
    """What one pass of a schedule wants done."""

    status: dict[str, Any]
    create_jobs: list[dict[str, Any]] = field(default_factory=list)
    delete_jobs: list[tuple[str, str | None]] = field(default_factory=list)
    create_pods: list[dict[str, Any]] = field(default_factory=list)
    delete_pods: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None

    def requeue(self, seconds: float | None) -> None:
        """Look again in `seconds` (the earliest request wins)."""
        if seconds is None:
            return
        seconds = max(seconds, 1.0)
        self.requeue_after = (
            seconds if self.requeue_after is None else min(self.requeue_after, seconds)
        )


def continuing_from(spec: dict[str, Any], promoted_uri: str) -> dict[str, Any]:
    """The template's spec with the promoted model as its source, read from the store the
    outputs are written to (output's connection, else the checkpoint's)."""
    out = dict(spec)
    store = {**(spec.get("checkpoint") or {}), **(spec.get("output") or {})}
    model = {
        k: v for k, v in (spec.get("model") or {}).items() if k in ("dtype", "trustRemoteCode")
    }
    model["source"] = promoted_uri
    for key in ("credentialsSecret", "endpoint", "region"):
        if store.get(key):
            model[key] = store[key]
    out["model"] = model
    return out


def run_job(
    schedule: FineTuneSchedule,
    template: dict[str, Any],
    name: str,
    data_uri: str | None,
    promoted_uri: str | None,
) -> tuple[dict[str, Any] | None, str | None]:
    """(run `name`'s FineTuneJob, None), or (None, why the template makes no valid job)."""
    spec = dict(template["spec"])
    if promoted_uri:
        spec = continuing_from(spec, promoted_uri)
    if data_uri:
        spec = children.with_values(spec, {"dataset.train": data_uri})
    g = schedule.spec.gate
    spec["benchmark"] = {"uri": g.benchmark, "exactMatch": g.exact_match}
    spec = children.own_folders(spec, name)
    problem = children.spec_problem(spec)
    if problem is not None:
        return None, f"the run's job is invalid: {problem}"[:1024]
    meta = schedule.metadata
    return (
        children.job_manifest(
            name,
            meta.namespace or "default",
            spec,
            template.get("metadata"),
            children.owner_reference(c.SCHEDULE_KIND, meta.name, meta.uid),
            {c.LABEL_SCHEDULE: meta.name},
        ),
        None,
    )


class _Pass:
    """One pass: the status being built and the decision collecting actions."""

    def __init__(
        self,
        schedule: FineTuneSchedule,
        template: dict[str, Any],
        status: dict[str, Any],
        now: datetime,
    ) -> None:
        self.schedule, self.spec, self.template = schedule, schedule.spec, template
        self.now, self.now_s = now, format_time(now)
        self.st: dict[str, Any] = {k: v for k, v in status.items() if v is not None}
        self.st["observedGeneration"] = schedule.metadata.generation
        self.records = [dict(r) for r in self.st.get("runs") or []]
        self.d = ScheduleDecision(status=self.st)

    @property
    def active(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r["phase"] in ACTIVE]

    def event(self, kind: str, reason: str, message: str) -> None:
        self.d.events.append(Event(kind, reason, message[:1024]))

    # -- runs ----------------------------------------------------------------------------------
    def observe(self, record: dict[str, Any], job: dict[str, Any] | None) -> None:
        """Follow a run's job; judge it once when it has finished."""
        if job is None:
            if record.get("uid") is None:  # written down, then the pass ended before the create
                manifest, _ = run_job(
                    self.schedule, self.template, record["name"], record.get("dataUri"),
                    self.promoted_uri_of(record),
                )  # fmt: skip
                if manifest is not None:
                    self.d.create_jobs.append(manifest)
                return
            self.finish(record, "Failed", False, "its FineTuneJob was deleted")
            return
        record["uid"] = job["metadata"].get("uid")
        st = job.get("status") or {}
        phase = st.get("phase")
        if phase == "Succeeded":
            self.judge(record, st)
        elif phase == "Failed":
            self.finish(record, "Failed", False, f"the run failed: {st.get('message')}")
        elif phase not in (None, "Pending"):
            record["phase"] = "Running"

    def promoted_uri_of(self, record: dict[str, Any]) -> str | None:
        """The model a run continues: its record's startedFrom, unless that is the template's."""
        started = record.get("startedFrom")
        return None if started == self.template["spec"]["model"]["source"] else started

    def judge(self, record: dict[str, Any], job_status: dict[str, Any]) -> None:
        """The quality gate on a finished run: promote its model or keep the current one."""
        bench = job_status.get("benchmark") or {}
        sha = bench.get("sha256")
        record["outputUri"] = (job_status.get("output") or {}).get("uri")
        record["benchmarkSha256"] = sha
        record["candidate"] = bench.get("after")
        sources = job_status.get("dataSources")
        if sources:
            record["dataSources"] = sources[:32]
        promoted = self.st.get("promoted")
        current, source = gate.current_scores(
            record.get("startedFrom"), bench.get("before"), promoted, sha
        )
        record["current"] = current
        verdict = gate.judge(self.spec.gate, bench.get("after"), current)
        promote = verdict.promote and bool(record["outputUri"])
        reason = f"{verdict.reason} (the current model's score {source})"
        if verdict.promote and not promote:
            reason = "the run reported no output URI"
        self.finish(record, "Succeeded", promote, reason)
        if promote:
            self.st["promoted"] = {
                "run": record["name"],
                "uri": record["outputUri"],
                "time": self.now_s,
                "scores": bench.get("after"),
                **({"benchmarkSha256": sha} if sha else {}),
            }
            self.event(
                "Normal",
                "Promoted",
                f"{record['name']}: {reason}; now serving {record['outputUri']}",
            )
        else:
            self.event("Warning", "NotPromoted", f"{record['name']}: {reason}")

    def finish(self, record: dict[str, Any], phase: str, promoted: bool, reason: str) -> None:
        record.update(phase=phase, promoted=promoted, reason=reason[:1024])
        record["completionTime"] = self.now_s
        self.st["lastResult"] = (
            "Promoted" if promoted else ("Rejected" if phase == "Succeeded" else "Failed")
        )
        if phase == "Failed":
            self.event("Warning", "RunFailed", f"{record['name']}: {reason}")

    def start(
        self,
        trigger: str,
        data_uri: str | None = None,
        data_version: str | None = None,
        scheduled: str | None = None,
    ) -> None:
        """Start the next run (Replace first ends the active ones)."""
        if self.spec.concurrency_policy == "Replace":
            for r in self.active:
                if r.get("uid"):
                    self.d.delete_jobs.append((r["name"], r["uid"]))
                self.finish(
                    r, "Failed", False, "replaced by a newer run (concurrencyPolicy Replace)"
                )
        number = int(self.st.get("nextRun") or 1)
        self.st["nextRun"] = number + 1
        name = children.run_name(self.schedule.metadata.name, number)
        promoted = (self.st.get("promoted") or {}).get("uri")
        manifest, problem = run_job(self.schedule, self.template, name, data_uri, promoted)
        record: dict[str, Any] = {
            "name": name,
            "trigger": trigger[:256],
            "scheduledTime": scheduled,
            "dataUri": data_uri or self.template["spec"]["dataset"]["train"],
            "dataVersion": data_version,
            "startedFrom": promoted or self.template["spec"]["model"]["source"],
            "phase": "Pending",
            "startTime": self.now_s,
        }
        self.records.append(record)
        if manifest is None:
            assert problem is not None
            self.finish(record, "Failed", False, problem)
            return
        self.d.create_jobs.append(manifest)
        self.event("Normal", "RunStarted", f"{name}: {trigger}, continuing {record['startedFrom']}")

    def may_start(self) -> bool:
        """Whether a due run may start now (Forbid waits for the active ones)."""
        return self.spec.concurrency_policy != "Forbid" or not self.active

    # -- triggers ------------------------------------------------------------------------------
    def on_schedule(self) -> str:
        """Cron: start the run of the latest due time (once), within the starting deadline."""
        assert self.spec.schedule is not None
        sched = cron.parse(self.spec.schedule, self.spec.time_zone)
        meta = self.schedule.metadata
        since = (
            parse_time(self.st.get("lastScheduleTime"))
            or parse_time(meta.creation_timestamp)
            or self.now
        )
        upcoming = cron.next_time(sched, self.now)
        if upcoming is not None:
            self.st["nextScheduleTime"] = format_time(upcoming)
            self.d.requeue((upcoming - self.now).total_seconds())
        due = cron.latest_due(sched, since, self.now)
        if due is None:
            return f"next run at {self.st.get('nextScheduleTime')}"
        due_s = format_time(due)
        deadline = self.spec.starting_deadline_seconds
        if deadline is not None and self.now - due > timedelta(seconds=deadline):
            self.st["lastScheduleTime"] = due_s
            self.event(
                "Warning", "MissedSchedule", f"the run due at {due_s} missed its starting deadline"
            )
            return f"missed the run due at {due_s}"
        if not self.may_start():
            return f"the run due at {due_s} waits for {self.active[0]['name']} (concurrencyPolicy Forbid)"
        self.st["lastScheduleTime"] = due_s
        self.start(f"schedule {self.spec.schedule} at {due_s}", scheduled=due_s)
        return f"started the run due at {due_s}"

    def on_new_data(self, pods: list[dict[str, Any]], settings: OperatorSettings) -> str:
        """New data: list the prefix with a data-watch pod every pollInterval; a changed listing
        starts a run on the latest drop (or the whole prefix)."""
        assert self.spec.trigger is not None
        nd = self.spec.trigger.new_data
        w = dict(self.st.get("data") or {})
        seq, handled = int(w.get("seq") or 0), int(w.get("handled") or 0)
        current = datawatch.pod_name(self.schedule.metadata.name, seq)
        pod = next((p for p in pods if p["metadata"]["name"] == current), None)
        for p in pods:
            if p["metadata"]["name"] != current and not p["metadata"].get("deletionTimestamp"):
                self.d.delete_pods.append(p["metadata"]["name"])
        if seq > handled:
            if pod is None:  # written down, then the pass ended before the create
                self.d.create_pods.append(datawatch.watch_pod(self.schedule, seq, settings))
                self.d.requeue(WATCH_POLL_SECONDS)
            else:
                self.read_listing(w, pod, nd.train_on)
        pending = w.get("pending")
        if pending and self.may_start():
            self.start(
                f"new data {pending['version']} at {pending['uri']}",
                pending["uri"],
                pending["version"],
            )
            w["consumed"], w["pending"] = pending["version"], None
        last = parse_time(w.get("lastPollTime"))
        interval = parse_duration(nd.poll_interval)
        if int(w.get("seq") or 0) == int(w.get("handled") or 0):
            if last is None or (self.now - last).total_seconds() >= interval:
                w["seq"] = seq = int(w.get("seq") or 0) + 1
                w["lastPollTime"] = self.now_s
                self.d.create_pods.append(datawatch.watch_pod(self.schedule, seq, settings))
                self.d.requeue(WATCH_POLL_SECONDS)
            else:
                self.d.requeue(interval - (self.now - last).total_seconds())
        self.st["data"] = {k: v for k, v in w.items() if v is not None}
        if w.get("pending"):
            return f"new data {w['pending']['version']} waits for {self.active[0]['name']} (concurrencyPolicy Forbid)"
        return f"watching {nd.prefix}: {w.get('message') or 'listing'}"

    def read_listing(self, w: dict[str, Any], pod: dict[str, Any], train_on: str) -> None:
        """Take a finished data-watch pod's listing (or failure), then delete the pod."""
        state, value = datawatch.outcome(pod)
        if state == "running":
            self.d.requeue(WATCH_POLL_SECONDS)
            return
        w["handled"] = w.get("seq")
        self.d.delete_pods.append(pod["metadata"]["name"])
        if state == "failed":
            w["message"] = f"listing failed: {value}"[:1024]
            self.event("Warning", "DataWatchFailed", str(value))
            return
        entries = value.get("entries") or []
        w["version"] = value["version"]
        w["message"] = (
            f"{value.get('objects')} objects in {len(entries)} drops, version {value['version']}"
        )
        if value["version"] == w.get("consumed") or not entries:
            return
        uri = entries[0]["uri"] if train_on == "latest" else value.get("prefix")
        w["pending"] = {"uri": uri, "version": value["version"]}

    # -- history -------------------------------------------------------------------------------
    def prune(self, runs: dict[str, dict[str, Any]]) -> None:
        """Keep the last historyLimit runs (active ones always); delete the jobs of runs no
        longer kept, except the promoted one's."""
        limit = self.spec.history_limit
        keep = self.records[-limit:]
        keep += [r for r in self.records[:-limit] if r["phase"] in ACTIVE]
        kept = {r["name"] for r in keep}
        self.records = [r for r in self.records if r["name"] in kept]
        promoted = (self.st.get("promoted") or {}).get("run")
        for name, job in runs.items():
            if (
                name not in kept
                and name != promoted
                and not job["metadata"].get("deletionTimestamp")
            ):
                self.d.delete_jobs.append((name, job["metadata"].get("uid")))


def decide_schedule(
    schedule: FineTuneSchedule,
    template: dict[str, Any],
    status: dict[str, Any],
    runs: dict[str, dict[str, Any]],
    pods: list[dict[str, Any]],
    now: datetime,
    settings: OperatorSettings,
) -> ScheduleDecision:
    """The next status of `schedule` and the actions to get there. `template` is
    spec.template as the apiserver holds it; `runs` the schedule's jobs by name; `pods` its
    data-watch pods."""
    p = _Pass(schedule, template, status, now)
    for record in p.records:
        if record["phase"] in ACTIVE:
            p.observe(record, runs.get(record["name"]))
    if schedule.spec.suspend:
        p.st["phase"], message = "Suspended", "suspended: no new runs"
    else:
        p.st["phase"] = "Active"
        if schedule.spec.schedule is not None:
            message = p.on_schedule()
        else:
            message = p.on_new_data(pods, settings)
    p.prune(runs)
    active = [r["name"] for r in p.active]
    p.st["runs"] = [{k: v for k, v in r.items() if v is not None} for r in p.records]
    p.st["active"] = active or None
    if p.records:
        p.st["lastRun"] = p.records[-1]["name"]
    p.st["message"] = (f"{len(active)} run(s) active; " if active else "") + message
    if p.st.get("conditions"):  # a spec fixed after InvalidSpec
        p.st["conditions"] = [cd for cd in p.st["conditions"] if cd.get("type") != "Failed"] or None
    p.st = {k: v for k, v in p.st.items() if v is not None}
    p.d.status = p.st
    return p.d
