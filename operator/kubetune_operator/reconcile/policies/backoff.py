"""Failure policy: retry a failed attempt until runPolicy.backoffLimit restarts were used."""

from __future__ import annotations


def may_restart(restarts_so_far: int, backoff_limit: int) -> bool:
    """True while another attempt is allowed (backoffLimit 0 means never restart)."""
    return restarts_so_far < backoff_limit
