"""Train the intent classifier with Horovod, following the trainer protocol.

Everything comes from the environment: TRAINING_DATA_PATH, MODEL_OUTPUT_DIR, METRICS_FILE, SEED, EPOCHS, LR,
BATCH_SIZE and FC_SIZE. One JSON line per epoch goes to METRICS_FILE; rank 0 writes the model. Each rank
reports its step and loss to HPCGW_PROGRESS_FILE (for the gateway's hang and divergence checks). A checkpoint
after every epoch lets a requeued job resume where it stopped. The loop, the data and the model are
`intent_classifier.common`'s, shared with the DDP form (`train_ddp.py`).
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("HOROVOD_FUSION_THRESHOLD", "0")  # before Horovod starts: see common.py on determinism

import torch
from torch import nn

import horovod.torch as hvd

from intent_classifier.common import train


class HorovodCollective:
    def init(self) -> tuple[int, int, int]:
        hvd.init()
        return hvd.rank(), hvd.size(), hvd.local_rank()

    def sum(self, tensor: torch.Tensor, name: str) -> torch.Tensor:
        return hvd.allreduce(tensor, op=hvd.Sum, name=name)

    def wrap(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[nn.Module, torch.optim.Optimizer]:
        hvd.broadcast_parameters(model.state_dict(), root_rank=0)
        hvd.broadcast_optimizer_state(optimizer, root_rank=0)
        return model, hvd.DistributedOptimizer(optimizer, named_parameters=model.named_parameters())

    def barrier(self, name: str) -> None:
        hvd.allreduce(torch.zeros(1), name=name)

    def shutdown(self) -> None:
        hvd.shutdown()


def main() -> int:
    return train(HorovodCollective())


if __name__ == "__main__":
    sys.exit(main())
