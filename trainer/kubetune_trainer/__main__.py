"""Entry point: python -m kubetune_trainer --config trainer.json (one process per rank, via torchrun).

Exit codes: 0 done; 43 stopped by SIGTERM after saving a checkpoint; 44 bad input (config, data
or model source); 45 GPU out of memory. The message of 44 and 45 is also written to
/dev/termination-log, where Kubernetes shows it.
"""

from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import sys
import traceback
from typing import TYPE_CHECKING

from .contract import (
    CONFIG_ENV,
    CONFIG_FILE_NAME,
    EXIT_BAD_INPUT,
    EXIT_DIR_ENV,
    EXIT_GPU_OOM,
    EXIT_OK,
    EXIT_PREEMPTED,
    TERMINATION_LOG,
    TERMINATION_LOG_ENV,
)
from .errors import BadInputError
from .redact import setup_logging

if TYPE_CHECKING:
    from .config import TrainerConfig
    from .trainer import Trainer


def report_error(message: str, termination_log: str | None = None) -> None:
    """Print the error and leave it where Kubernetes shows it as the container's message.

    The kubelet creates the termination-log file in every container (`kubetune run` creates
    one per worker and names it in KUBETUNE_TERMINATION_LOG); where it is absent (a test on
    the host) nothing is written, so no stray file lands in /dev.
    """
    sys.stderr.write(f"kubetune-trainer: error: {message}\n")
    termination_log = termination_log or os.environ.get(TERMINATION_LOG_ENV, TERMINATION_LOG)
    if not os.path.isfile(termination_log):
        return
    try:
        with open(termination_log, "w") as f:
            f.write(message[:4000])
    except OSError:
        pass


def load_config(path: str) -> TrainerConfig:
    """The TrainerConfig, with a validation error turned into bad input naming the fields."""
    from pydantic import ValidationError

    from .config import TrainerConfig

    try:
        return TrainerConfig.load(path)
    except FileNotFoundError:
        raise BadInputError(f"config file {path!r} not found") from None
    except ValueError as e:
        if isinstance(e, ValidationError):
            fields = "; ".join(
                f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors()
            )
            raise BadInputError(f"{path}: {fields}") from None
        raise BadInputError(f"{path}: {e}") from None


def record_exit(code: int) -> int:
    """Leave this rank's exit code where the launcher looks (KUBETUNE_EXIT_DIR), and return it."""
    folder = os.environ.get(EXIT_DIR_ENV)
    if folder:
        rank = os.environ.get("RANK", "0")
        try:
            with open(os.path.join(folder, f"rank-{rank}.code"), "w") as f:
                f.write(str(code))
        except OSError:
            pass
    return code


def main(argv: list[str] | None = None) -> int:
    """Run one rank of a fine-tuning job; returns its exit code."""
    return record_exit(run(argv))


def run(argv: list[str] | None = None) -> int:
    """Parse arguments, train, and map the outcome to an exit code."""
    p = argparse.ArgumentParser(prog="python -m kubetune_trainer", description=__doc__)
    p.add_argument(
        "--config",
        default=os.environ.get(CONFIG_ENV, CONFIG_FILE_NAME),
        help="TrainerConfig JSON",
    )
    args = p.parse_args(argv)
    setup_logging(os.environ.get("KUBETUNE_LOG_LEVEL", "WARNING"))
    try:
        cfg = load_config(args.config)
    except BadInputError as e:
        report_error(str(e))
        return EXIT_BAD_INPUT
    trainer: Trainer | None = None
    try:
        from . import dist, loop
        from .trainer import Trainer

        env = dist.setup()
        trainer = Trainer(cfg, env)
        state = trainer.setup()
        state = loop.run(trainer, state)
        if state.preempted:
            trainer.ckpt.wait()
            dist.cleanup()
            return EXIT_PREEMPTED
        trainer.finish(state)
        dist.cleanup()
        return EXIT_OK
    except BadInputError as e:
        report_error(str(e))
        return EXIT_BAD_INPUT
    except Exception as e:
        from . import gpu_oom

        if not gpu_oom.is_gpu_oom(e):
            raise
        report_error(gpu_oom.describe(e, cfg))
        if trainer is not None:
            trainer.ckpt.wait()  # a checkpoint upload under way finishes: nothing is lost
        return EXIT_GPU_OOM


def exit_now(code: int) -> None:
    """End the rank without interpreter shutdown, once its work is flushed.

    Shutdown is where a finished rank can still fail the job: a communication thread that
    releases the last collective's tensors then must take the GIL, which shutdown forbids
    (the thread is ended inside C++ code and the process aborts with "terminate called without
    an active exception"), and a live process group can wait on the other ranks. Everything the
    rank leaves behind (checkpoints, export, exit code, logs) is written before this point.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    faulthandler.enable()  # a crash in native code prints every thread's Python stack to the log
    try:
        code = main()
    except Exception:
        traceback.print_exc()
        code = 1
    exit_now(code)
