"""Functions the tests submit as jobs (launchers.Executor, Client.submit_function). They live in an importable
module, since cloudpickle sends a module's functions by reference and the nodes import them from here."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from submitit.helpers import DelayedSubmission


class RankRefusedError(ValueError):
    """Raised by one chosen rank: the caller must get this very type back."""


def horovod_allreduce(scale: float = 1.0) -> dict[str, Any]:
    """Each rank contributes (rank + 1) * scale; the sum over 4 ranks of scale 1 is 10."""
    import torch

    import horovod.torch as hvd

    total = hvd.allreduce(torch.tensor([(hvd.rank() + 1) * scale]), op=hvd.Sum, name="sum")
    return {
        "rank": hvd.rank(),
        "size": hvd.size(),
        "local_rank": hvd.local_rank(),
        "sum": float(total.item()),
        "host": os.uname().nodename,
    }


def ddp_allreduce() -> dict[str, Any]:
    import torch
    import torch.distributed as dist

    value = torch.tensor([float(dist.get_rank() + 1)])
    dist.all_reduce(value)
    return {"rank": dist.get_rank(), "size": dist.get_world_size(), "sum": float(value.item())}


def refuse_on_rank(bad_rank: int) -> int:
    import horovod.torch as hvd

    if hvd.rank() == bad_rank:
        raise RankRefusedError(f"rank {bad_rank} refuses the batch")
    rank: int = hvd.rank()
    return rank


def square_slowly(x: int, seconds: float = 2.0) -> int:
    time.sleep(seconds)
    return x * x


class Counter:
    """A checkpointable function object, as in submitit: its state (``done``) survives a requeue."""

    def __init__(self, hold_after: int = 0) -> None:
        self.done = 0
        self.resumed_from: list[int] = []
        self.hold_after = hold_after  # the first run holds there, so a test's signal always finds it running

    def __call__(self, steps: int, progress: str) -> dict[str, Any]:
        self.resumed_from.append(self.done)
        while self.done < steps:
            time.sleep(0.5)
            self.done += 1
            Path(progress).write_text(str(self.done))
            if self.done == self.hold_after and len(self.resumed_from) == 1:
                time.sleep(300)
        return {"done": self.done, "resumed_from": self.resumed_from}

    def checkpoint(self, steps: int, progress: str) -> DelayedSubmission:
        return DelayedSubmission(self, steps, progress)
