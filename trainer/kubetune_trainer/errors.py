"""Exit codes and the error type for bad input, shared by every trainer module."""

from __future__ import annotations

EXIT_OK = 0
# After SIGTERM made the trainer save a checkpoint and stop; equals the operator's
# kubetune_operator.api.constants.EXIT_PREEMPTED (the trainer does not import the operator).
EXIT_PREEMPTED = 43
# The config, data or model source is wrong: retrying the same attempt cannot help.
EXIT_BAD_INPUT = 44
# The GPU ran out of memory: the same settings run out again, so the job is not retried.
EXIT_GPU_OOM = 45

TERMINATION_LOG = "/dev/termination-log"
# Where the message goes instead (the local runner points each worker at its own file).
TERMINATION_LOG_ENV = "KUBETUNE_TERMINATION_LOG"


class BadInputError(ValueError):
    """A user-facing problem with the config, data or model source; the message names where."""
