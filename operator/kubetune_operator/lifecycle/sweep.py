"""A sweep's reconcile decision: from (the sweep, its trial jobs, the clock) to the next status
and the trials to create or stop. Pure; the controller executes it.

The status is the record of which trials exist: a trial is written into status.trials before
its job is created, so a pass that dies in between is finished by the next one (a trial never
seen is created again, under the same name), and parallelism counts what the status says, never
a listing that may lag.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kubetune_operator.api import constants as c
from kubetune_operator.api.sweep import FineTuneSweep
from kubetune_operator.lifecycle import children, early_stop, search
from kubetune_operator.reconcile.conditions import set_condition
from kubetune_operator.reconcile.decision import Event
from kubetune_operator.reconcile.timeutil import format_time

FINISHED = ("Succeeded", "Failed", "Terminated")
# Trial fields that only follow a trial's progress; a status change of nothing else may wait.
PROGRESS_ONLY = frozenset({"step", "totalSteps", "evalLoss", "jobPhase"})


@dataclass
class SweepDecision:
    """What one pass of a sweep wants done."""

    status: dict[str, Any]
    create: list[dict[str, Any]] = field(default_factory=list)
    delete: list[tuple[str, str | None]] = field(default_factory=list)  # (trial, uid)
    events: list[Event] = field(default_factory=list)


def objective(sweep: FineTuneSweep, job_status: dict[str, Any]) -> float | None:
    """A Succeeded trial's objective: the eval loss of the exported weights (the evaluation
    at progress.exportedStep, else the last one), or the final training loss."""
    progress = job_status.get("progress") or {}
    if sweep.spec.objective.metric == "loss":
        return _number(progress.get("loss"))
    exported = progress.get("exportedStep")
    for point in progress.get("evals") or []:
        if point.get("step") == exported and exported is not None:
            return _number(point.get("loss"))
    return _number(progress.get("evalLoss"))


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def observe_trial(sweep: FineTuneSweep, entry: dict[str, Any], job: dict[str, Any]) -> None:
    """Update a trial's status entry from its job."""
    meta, st = job.get("metadata") or {}, job.get("status") or {}
    progress = st.get("progress") or {}
    entry["uid"] = meta.get("uid")
    entry["jobPhase"] = st.get("phase")
    for key in ("step", "totalSteps", "evalLoss"):
        if progress.get(key) is not None:
            entry[key] = progress[key]
    phase = st.get("phase")
    if phase == "Succeeded":
        entry["phase"] = "Succeeded"
        entry["outputUri"] = (st.get("output") or {}).get("uri")
        entry["objective"] = objective(sweep, st)
        if entry["objective"] is None:
            entry["message"] = f"reported no {sweep.spec.objective.metric}"
    elif phase == "Failed":
        entry["phase"] = "Failed"
        entry["message"] = str(st.get("message") or "the trial failed")[:1024]
    elif phase not in (None, "Pending"):
        entry["phase"] = "Running"


def best_trial(sweep: FineTuneSweep, entries: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The Succeeded trial with the best objective (the first one on a tie)."""
    scored = [e for e in entries if e["phase"] == "Succeeded" and e.get("objective") is not None]
    if not scored:
        return None
    sign = 1.0 if sweep.spec.objective.goal == "minimize" else -1.0
    return min(scored, key=lambda e: (sign * e["objective"], e["index"]))


def trial_job(
    sweep: FineTuneSweep, template: dict[str, Any], index: int, values: dict[str, Any]
) -> tuple[dict[str, Any] | None, str | None]:
    """(the trial's FineTuneJob, None), or (None, why its parameters make no valid job)."""
    meta = sweep.metadata
    name = children.trial_name(meta.name, index)
    spec = children.own_folders(children.with_values(template["spec"], values), name)
    problem = children.spec_problem(spec)
    if problem is not None:
        return None, f"parameters {values} make an invalid job: {problem}"[:1024]
    manifest = children.job_manifest(
        name,
        meta.namespace or "default",
        spec,
        template.get("metadata"),
        children.owner_reference(c.SWEEP_KIND, meta.name, meta.uid),
        {c.LABEL_SWEEP: meta.name, c.LABEL_TRIAL: str(index)},
    )
    return manifest, None


def decide_sweep(
    sweep: FineTuneSweep,
    template: dict[str, Any],
    status: dict[str, Any],
    trials: dict[str, dict[str, Any]],
    now: datetime,
) -> SweepDecision:
    """The next status of `sweep` and the trials to create and stop.

    `template` is spec.template as the apiserver holds it; `trials` the sweep's jobs by name.
    """
    now_s = format_time(now)
    spec = sweep.spec
    st: dict[str, Any] = {k: v for k, v in status.items() if v is not None}
    old_phase = st.get("phase")
    st["observedGeneration"] = sweep.metadata.generation
    d = SweepDecision(status=st)
    entries = [dict(e) for e in st.get("trials") or []]
    total = search.total_trials(spec)
    st["totalTrials"] = total

    for e in entries:
        job = trials.get(e["name"])
        if e["phase"] == "Terminated" and job and not job["metadata"].get("deletionTimestamp"):
            d.delete.append((e["name"], e.get("uid")))  # the pass that stopped it ended early
        if e["phase"] in FINISHED:
            continue
        if job is not None:
            observe_trial(sweep, e, job)
        elif e.get("uid") is None:  # written down, then the pass ended before the create
            manifest, _ = trial_job(sweep, template, e["index"], e["parameters"])
            if manifest is not None:
                d.create.append(manifest)
        else:
            e["phase"] = "Failed"
            e["message"] = "its FineTuneJob was deleted"

    if spec.early_termination is not None:
        _terminate_losers(sweep, entries, trials, d)

    active = sum(e["phase"] in ("Pending", "Running") for e in entries)
    while active < spec.parallelism and len(entries) < total:
        index = len(entries)
        values = search.trial_parameters(spec, index)
        manifest, problem = trial_job(sweep, template, index, values)
        name = children.trial_name(sweep.metadata.name, index)
        entry: dict[str, Any] = {"name": name, "index": index, "parameters": values}
        if manifest is None:
            entry.update(phase="Failed", message=problem)
            d.events.append(Event("Warning", "InvalidTrial", f"{name}: {problem}"))
        else:
            entry["phase"] = "Pending"
            d.create.append(manifest)
            active += 1
        entries.append(entry)
    if entries:
        st.setdefault("startTime", now_s)

    best = best_trial(sweep, entries)
    for e in entries:
        e["best"] = True if best is not None and e is best else None
        for key in [k for k, v in e.items() if v is None]:
            del e[key]
    st["trials"] = entries
    if best is not None:
        st["best"] = {
            "trial": best["name"],
            "objective": best["objective"],
            "parameters": best["parameters"],
            **({"outputUri": best["outputUri"]} if best.get("outputUri") else {}),
        }
    _phase(sweep, st, entries, total, best, old_phase, now_s, d)
    return d


def _terminate_losers(
    sweep: FineTuneSweep,
    entries: list[dict[str, Any]],
    trials: dict[str, dict[str, Any]],
    d: SweepDecision,
) -> None:
    """Stop running trials the median rule finds clearly losing (their jobs are deleted)."""
    rule = sweep.spec.early_termination
    assert rule is not None
    completed = [
        early_stop.eval_history(trials.get(e["name"])) for e in entries if e["phase"] == "Succeeded"
    ]
    completed = [h for h in completed if h]
    minimize = sweep.spec.objective.goal == "minimize"
    for e in entries:
        job = trials.get(e["name"])
        if e["phase"] != "Running" or job is None:
            continue
        why = early_stop.median_stop(early_stop.eval_history(job), completed, rule, minimize)
        if why is None:
            continue
        e["phase"] = "Terminated"
        e["message"] = why
        d.delete.append((e["name"], e.get("uid")))
        d.events.append(Event("Normal", "TrialTerminated", f"{e['name']}: {why}"))


def _phase(
    sweep: FineTuneSweep,
    st: dict[str, Any],
    entries: list[dict[str, Any]],
    total: int,
    best: dict[str, Any] | None,
    old_phase: str | None,
    now_s: str,
    d: SweepDecision,
) -> None:
    """Phase, summary, message and conditions from the trial table."""
    count = {p: sum(e["phase"] == p for e in entries) for p in (*FINISHED, "Pending", "Running")}
    done = sum(count[p] for p in FINISHED)
    parts = [f"{count[p]} {p.lower()}" for p in ("Succeeded", "Terminated", "Failed") if count[p]]
    st["summary"] = f"{done}/{total} done" + (": " + ", ".join(parts) if parts else "")
    gen = sweep.metadata.generation
    conditions = st.get("conditions") or []
    if done < total:
        phase, reason = "Running", "TrialsRunning"
        message = f"{count['Running'] + count['Pending']} trial(s) running, {done}/{total} done"
    elif best is not None:
        phase, reason = "Succeeded", "BestTrialFound"
        message = (
            f"best trial {best['name']}: {sweep.spec.objective.metric} {best['objective']:.6g}"
        )
    else:
        phase, reason = "Failed", "NoTrialSucceeded"
        message = f"no trial succeeded with a {sweep.spec.objective.metric}"
    st["phase"], st["message"] = phase, message
    conditions = set_condition(
        conditions, "Running", phase == "Running", reason, message, now_s, gen
    )
    if phase != "Running":
        st.setdefault("completionTime", now_s)
        conditions = set_condition(conditions, phase, True, reason, message, now_s, gen)
    st["conditions"] = conditions
    if phase != old_phase and (phase != "Running" or old_phase is None):
        d.events.append(Event("Warning" if phase == "Failed" else "Normal", reason, message[:1024]))
