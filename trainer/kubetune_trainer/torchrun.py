"""torchrun whose report of a failed rank is one line, not a traceback and a banner.

    python -m kubetune_trainer.torchrun <torchrun arguments>

When a rank exits non-zero, torchrun raises ChildFailedError out of its main and prints ~30
lines (its own stack and a "Root Cause" box) after the rank's output, burying the cause the
rank printed (and left in the termination log). This runs the same launcher and reports that
failure in one line; any other torchrun error keeps its traceback.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Run torchrun with argv; 1 when a rank failed (as torchrun), after one line saying which."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    try:
        run(parse_args(argv if argv is not None else sys.argv[1:]))
    except ChildFailedError as failed:
        rank, failure = failed.get_first_failure()
        sys.stderr.write(
            f"torchrun: rank {rank} (local rank {failure.local_rank}) exited "
            f"{failure.exitcode}; its error is above\n"
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
