"""A submitit program moved to hpcgw's launchers: two lines changed, marked ``# hpcgw``.

The submitit original had::

    import submitit
    ...
    executor = submitit.AutoExecutor(folder=args.folder)

Everything else below is the original, unchanged: ``update_parameters`` with submitit's names, ``submit``,
``result``, ``map_array``. What the move brings: every rank of a multi-task job calls the function with Horovod
already initialised (``framework="ddp"`` for torch.distributed), ``results()`` has every rank's value, and a
rank's exception comes back with its own type.

Run it on a login node:  python docs/examples/from_submitit.py --partition team-a
"""

from __future__ import annotations

import argparse

import launchers  # hpcgw: was `import submitit`


def train(lr: float) -> float:
    """A stand-in for a training run: its final loss."""
    return round((lr - 1.0) ** 2, 4)


def allreduce() -> float:
    import torch

    import horovod.torch as hvd

    if not hvd.is_initialized():  # under submitit the function had to; under hpcgw it is done already
        hvd.init()
    return float(hvd.allreduce(torch.tensor([hvd.rank() + 1.0]), op=hvd.Sum).item())


def square(x: int) -> int:
    return x * x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folder", default="submitit-jobs", help="where the jobs' pickles and logs go")
    parser.add_argument("--partition", required=True, help="the Slurm partition to run on")
    args = parser.parse_args()

    executor = launchers.Executor(folder=args.folder)  # hpcgw: was `submitit.AutoExecutor(folder=args.folder)`
    executor.update_parameters(timeout_min=5, slurm_partition=args.partition)

    job = executor.submit(train, lr=0.1)
    print(f"loss for lr=0.1: {job.result()}")

    executor.update_parameters(nodes=2, tasks_per_node=2)
    job = executor.submit(allreduce)
    print(f"sum over 4 ranks: {job.result()}")

    executor.update_parameters(nodes=1, tasks_per_node=1, slurm_array_parallelism=2)
    jobs = executor.map_array(square, range(5))
    print(f"squares: {[j.result() for j in jobs]}")


if __name__ == "__main__":
    main()
