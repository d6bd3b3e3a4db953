"""Train the intent classifier with torch.distributed (DDP), following the trainer protocol.

The same environment, data, model, loop, checkpoints and metrics as the Horovod form (`intent_classifier.common`).
The launcher's DDP runtime sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT from Slurm's variables
(launchers/runtime/ddp.py); the process group is NCCL on GPUs, Gloo on CPUs.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from intent_classifier.common import train


class TorchCollective:
    def init(self) -> tuple[int, int, int]:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))

    def sum(self, tensor: torch.Tensor, name: str) -> torch.Tensor:
        device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else None
        summed = tensor.to(device) if device is not None else tensor.clone()
        dist.all_reduce(summed, op=dist.ReduceOp.SUM)
        return summed.cpu()

    def wrap(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[nn.Module, torch.optim.Optimizer]:
        # DDP broadcasts rank 0's parameters when it wraps; a resumed optimizer state is the same checkpoint on
        # every rank. Gradients are averaged over the ranks during backward.
        return DistributedDataParallel(model), optimizer

    def barrier(self, name: str) -> None:
        dist.barrier()

    def shutdown(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


def main() -> NoReturn:
    collective = TorchCollective()
    try:
        code = train(collective)
    finally:
        # Also on an error: a process group alive at exit can abort the interpreter (SIGABRT), and the job would
        # report 134 instead of the trainer's own exit code.
        collective.shutdown()
    # DDP's wrapper still holds the Gloo group after destroy_process_group. Freed during interpreter shutdown, while
    # a peer closes its connections, it can abort the process ("terminate called without an active exception"):
    # seen once in about ten requeued runs on Slurm, a finished run reported as exit code 134. Every output is
    # written and closed by now, so leave without that teardown.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
