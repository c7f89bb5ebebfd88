"""The error type for bad input, shared by every trainer module (its exit code is
contract.EXIT_BAD_INPUT)."""

from __future__ import annotations


class BadInputError(ValueError):
    """A user-facing problem with the config, data or model source; the message names where."""
