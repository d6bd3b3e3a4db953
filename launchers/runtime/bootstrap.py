"""In-job bootstrap for the raw ``srun`` path: each task runs
``python -m launchers.runtime.bootstrap [--framework ddp] -- COMMAND [ARGS...]``, which sets Horovod's (or
torch.distributed's) variables from Slurm's, hosts the rendezvous in rank 0's task, runs the trainer and passes
on its exit code (the same per-rank flow as the launcher's task, without submitit)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from launchers.runtime.rendezvous import DEFAULT_RENDEZVOUS_TIMEOUT_S
from launchers.runtime.task import TrainerTask
from launchers.runtime.topology import BootstrapError

log = logging.getLogger("hpcgw.bootstrap")


def main(argv: Sequence[str] | None = None) -> int:
    """The raw ``srun`` path: the same per-rank flow as the launcher's task, without submitit."""
    parser = argparse.ArgumentParser(
        prog="python -m launchers.runtime.bootstrap",
        description="Set Horovod's (or torch.distributed's) variables from Slurm's, host the rendezvous on rank 0, "
        "run COMMAND.",
    )
    parser.add_argument(
        "--framework",
        choices=("horovod", "ddp"),
        default="horovod",
        help="horovod: HOROVOD_* and the Gloo rendezvous; ddp: RANK, WORLD_SIZE, MASTER_ADDR... [default: horovod]",
    )
    parser.add_argument(
        "--rendezvous-timeout",
        type=float,
        default=float(os.environ.get("HPCGW_RENDEZVOUS_TIMEOUT_S", DEFAULT_RENDEZVOUS_TIMEOUT_S)),
        help="seconds a rank waits for the rendezvous [env HPCGW_RENDEZVOUS_TIMEOUT_S; default 60]",
    )
    parser.add_argument("--folder", default=".", help="where the start marker and exit codes go [default: .]")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given (use: -- COMMAND [ARGS...])")
    if "SLURM_PROCID" not in os.environ:
        parser.error("SLURM_PROCID is not set: run this under srun inside a Slurm job")
    try:
        TrainerTask(command, {}, os.path.abspath(args.folder), args.rendezvous_timeout, framework=args.framework)()
    except BootstrapError as exc:
        log.error("%s", exc)
        return 2
    return 0  # a failing trainer ended this process with its own exit code already


if __name__ == "__main__":
    sys.exit(main())
