"""torch.distributed (DDP) without torchrun and without ssh: srun has placed one process per rank already.

Rank 0's task hosts the job's TCPStore, the way torchrun's agent does (``TORCHELASTIC_USE_AGENT_STORE``), so
that the task, not the trainer, owns the rendezvous. That has two uses:

- the other ranks learn its port from the job folder, as for Horovod's Gloo rendezvous (launchers.runtime.task);
- the task sees every rank finish ``init_process_group``. ``TORCH_DIST_INIT_BARRIER=1`` makes each rank count
  itself in the store before init returns, and the last one sets a key the task waits for. Then it writes the
  start marker (launching -> running), exactly when Horovod's path does. The key's name is torch's own
  (2.1 to 2.13 at least); should a release rename it, rank 0's first progress report (which comes after its
  init, which needs every rank) writes the marker instead.

The trainer calls ``torch.distributed.init_process_group(backend)`` with no arguments: NCCL on GPUs, Gloo on
CPUs. It reads ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``
from its environment.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from launchers.runtime.topology import HorovodTopology

# The key the last rank sets in init_process_group's store-based barrier (torch.distributed.distributed_c10d:
# "<default_pg prefix>/store_based_barrier_key:<group name>:last_worker"; the group name was "1" before 2.1).
INIT_DONE_KEYS = (
    "default_pg/store_based_barrier_key:0:last_worker",
    "default_pg/store_based_barrier_key:1:last_worker",
)
WATCH_S = 0.2


class HostedStore:
    """The job's TCPStore in rank 0's task, and a thread that calls ``on_all_ranks`` once every rank is in."""

    def __init__(
        self,
        addr: str,
        port: int,
        size: int,
        timeout_s: float,
        on_all_ranks: Callable[[], None] | None = None,
        progressed: Callable[[], bool] = lambda: False,
    ) -> None:
        from torch.distributed import TCPStore  # type: ignore[attr-defined]

        self.store: Any = TCPStore(
            addr, port, size, True, timedelta(seconds=timeout_s), wait_for_workers=False
        )  # binds every interface; ``addr`` is what the ranks are told
        self.port = int(self.store.port)
        self._stop = threading.Event()
        self._progressed = progressed  # the fallback should a torch release rename the barrier's key
        self._thread: threading.Thread | None = None
        if on_all_ranks is not None:
            self._thread = threading.Thread(target=self._watch, args=(on_all_ranks,), name="ddp-init", daemon=True)
            self._thread.start()

    def _watch(self, on_all_ranks: Callable[[], None]) -> None:
        while not self._stop.wait(WATCH_S):
            try:
                if any(self.store.check([key]) for key in INIT_DONE_KEYS) or self._progressed():
                    on_all_ranks()
                    return
            except RuntimeError:
                return  # the store is closing: the trainer ended before every rank was in

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self.store = None


def ddp_env(topology: HorovodTopology, addr: str, port: int, iface: str | None) -> dict[str, str]:
    nodes = [host for host, _ in topology.hosts]
    env = {
        "RANK": str(topology.rank),
        "WORLD_SIZE": str(topology.size),
        "LOCAL_RANK": str(topology.local_rank),
        "LOCAL_WORLD_SIZE": str(topology.local_size),
        "GROUP_RANK": str(nodes.index(topology.hostname) if topology.hostname in nodes else 0),
        "MASTER_ADDR": addr,
        "MASTER_PORT": str(port),
        "TORCHELASTIC_USE_AGENT_STORE": "True",  # connect to the task's store; rank 0 hosts none of its own
        "TORCH_DIST_INIT_BARRIER": "1",  # every rank checks in at init: the start marker waits for that
    }
    if iface:
        env["GLOO_SOCKET_IFNAME"] = iface
        env["NCCL_SOCKET_IFNAME"] = iface
    return env
