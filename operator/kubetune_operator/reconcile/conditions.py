"""Kubernetes-style conditions: set one, keeping lastTransitionTime when the status is unchanged."""

from __future__ import annotations

from typing import Any


def set_condition(
    conditions: list[dict[str, Any]],
    kind: str,
    status: bool,
    reason: str,
    message: str,
    now: str,
    generation: int | None,
) -> list[dict[str, Any]]:
    """A new list with condition `kind` set (others untouched, order stable)."""
    value = "True" if status else "False"
    out = []
    found = False
    for cond in conditions:
        if cond.get("type") != kind:
            out.append(cond)
            continue
        found = True
        changed = cond.get("status") != value
        out.append(
            {
                "type": kind,
                "status": value,
                "reason": reason,
                "message": message,
                "lastTransitionTime": now if changed else cond.get("lastTransitionTime", now),
                "observedGeneration": generation,
            }
        )
    if not found:
        out.append(
            {
                "type": kind,
                "status": value,
                "reason": reason,
                "message": message,
                "lastTransitionTime": now,
                "observedGeneration": generation,
            }
        )
    return out


def condition_status(conditions: list[dict[str, Any]], kind: str) -> str | None:
    """ "True"/"False"/"Unknown" of condition `kind`, None if absent."""
    for cond in conditions:
        if cond.get("type") == kind:
            return str(cond.get("status"))
    return None
