"""In-job Horovod bootstrap: each `srun` task runs this before the trainer.

Why not `horovodrun`: under Slurm the ranks are already placed by `srun`; we only need to tell Horovod who is
who. This module derives Horovod's rank/size/local/cross variables from Slurm's, hosts the Gloo rendezvous
server in rank 0's task, makes the other ranks wait for it (bounded), runs the trainer, and passes on its exit
code. Run it as ``python -m launchers.bootstrap -- COMMAND [ARGS...]``.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from launchers.hostlist import expand_hostlist, expand_tasks_per_node

log = logging.getLogger("hpcgw.bootstrap")

DEFAULT_RENDEZVOUS_TIMEOUT_S = 60.0
EXIT_RENDEZVOUS = 75  # EX_TEMPFAIL: the rendezvous could not be reached


class BootstrapError(RuntimeError):
    """The Slurm environment does not describe a usable Horovod job."""


@dataclass(frozen=True)
class HorovodTopology:
    """Where this task sits in the job, in Horovod's terms."""

    rank: int
    size: int
    local_rank: int
    local_size: int
    cross_rank: int
    cross_size: int
    hostname: str
    hosts: tuple[tuple[str, int], ...]  # (node, tasks on it), in Slurm's node order

    @classmethod
    def from_slurm(cls, env: Mapping[str, str]) -> HorovodTopology:
        """Read the step's placement. Block distribution is assumed (the launcher passes ``-m block``)."""
        try:
            nodes = expand_hostlist(env.get("SLURM_STEP_NODELIST") or env["SLURM_JOB_NODELIST"])
            tasks = expand_tasks_per_node(env.get("SLURM_STEP_TASKS_PER_NODE") or env["SLURM_TASKS_PER_NODE"])
            rank = int(env["SLURM_PROCID"])
            size = int(env.get("SLURM_STEP_NUM_TASKS") or env["SLURM_NTASKS"])
            node_id = int(env["SLURM_NODEID"])
            local_rank = int(env["SLURM_LOCALID"])
            hostname = env.get("SLURMD_NODENAME") or nodes[node_id]
        except KeyError as exc:
            raise BootstrapError(f"{exc.args[0]} is not set: run this under srun inside a Slurm job") from None
        if len(nodes) != len(tasks) or sum(tasks) != size:
            raise BootstrapError(f"inconsistent step layout: nodes {nodes}, tasks per node {tasks}, size {size}")
        if not 0 <= rank < size or not 0 <= node_id < len(nodes):
            raise BootstrapError(f"rank {rank} / node {node_id} outside a job of {size} ranks on {len(nodes)} nodes")
        # Horovod's cross communicator groups the ranks with the same local rank across nodes.
        cross_size = sum(1 for count in tasks if count > local_rank)
        cross_rank = sum(1 for count in tasks[:node_id] if count > local_rank)
        return cls(
            rank,
            size,
            local_rank,
            tasks[node_id],
            cross_rank,
            cross_size,
            hostname,
            tuple(zip(nodes, tasks, strict=True)),
        )

    def horovod_env(
        self, rendezvous_addr: str, rendezvous_port: int, iface: str | None, timeout_s: float
    ) -> dict[str, str]:
        env = {
            "HOROVOD_RANK": str(self.rank),
            "HOROVOD_SIZE": str(self.size),
            "HOROVOD_LOCAL_RANK": str(self.local_rank),
            "HOROVOD_LOCAL_SIZE": str(self.local_size),
            "HOROVOD_CROSS_RANK": str(self.cross_rank),
            "HOROVOD_CROSS_SIZE": str(self.cross_size),
            "HOROVOD_HOSTNAME": self.hostname,
            "HOROVOD_GLOO_RENDEZVOUS_ADDR": rendezvous_addr,
            "HOROVOD_GLOO_RENDEZVOUS_PORT": str(rendezvous_port),
            "HOROVOD_GLOO_TIMEOUT_SECONDS": str(int(timeout_s)),
            # A build with MPI would otherwise pick MPI as the controller and ignore the variables above.
            "HOROVOD_CONTROLLER": "gloo",
            "HOROVOD_CPU_OPERATIONS": "gloo",
        }
        if iface:
            env["HOROVOD_GLOO_IFACE"] = iface
            env["NCCL_SOCKET_IFNAME"] = iface
        return env


def resolve_node_address(node: str, env: Mapping[str, str]) -> str:
    """The address of ``node``: DNS first; else Slurm's NodeAddr (emulated nodes have no DNS name)."""
    if env.get("HPCGW_RENDEZVOUS_ADDR"):
        return env["HPCGW_RENDEZVOUS_ADDR"]
    try:
        return socket.gethostbyname(node)
    except OSError:
        pass
    from launchers.shell import run

    out = run(["scontrol", "show", "node", "-o", node], timeout_s=30).stdout
    for field in out.split():
        if field.startswith("NodeAddr="):
            return field.split("=", 1)[1]
    raise BootstrapError(f"cannot resolve the address of node {node}")


def network_iface(env: Mapping[str, str], rendezvous_addr: str) -> str | None:
    """The interface Gloo and NCCL use: configured, or loopback when the whole job is on loopback."""
    if env.get("HPCGW_NETWORK_IFACE"):
        return env["HPCGW_NETWORK_IFACE"]
    try:
        if ipaddress.ip_address(rendezvous_addr).is_loopback:
            return "lo"
    except ValueError:
        pass
    return None


def start_rendezvous_server(
    topology: HorovodTopology, port: int, on_all_ranks: Callable[[], None] | None = None
) -> tuple[object, threading.Thread]:
    """Host Horovod's Gloo rendezvous. ``on_all_ranks`` runs once every rank finished the global rendezvous,
    i.e. every rank is inside ``hvd.init()`` with its Gloo context connected."""
    from horovod.runner.common.util.hosts import get_host_assignments, parse_hosts
    from horovod.runner.http.http_server import RendezvousHandler, RendezvousHTTPServer

    lock = threading.Lock()
    finished: set[str] = set()

    class Handler(RendezvousHandler):  # type: ignore[misc]
        def do_DELETE(self) -> None:  # noqa: N802  (http.server naming) a rank is done with a scope
            parts = self.path.split("/")
            super().do_DELETE()
            if on_all_ranks is None or len(parts) < 3 or parts[1] != "global":
                return
            with lock:
                finished.add(parts[2])
                complete = len(finished) == topology.size
            if complete:
                on_all_ranks()

    server = RendezvousHTTPServer(("0.0.0.0", port), Handler, 0)  # noqa: S104  (ranks on other nodes)
    hosts = ",".join(f"{host}:{slots}" for host, slots in topology.hosts)
    # init() with the full plan: keys are cleared only after every rank finished, not when rank 0 did.
    server.init(get_host_assignments(parse_hosts(hosts), topology.size))
    thread = threading.Thread(target=server.serve_forever, name="rendezvous", daemon=True)
    thread.start()
    return server, thread


def wait_for_port(addr: str, port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((addr, port), timeout=2):
                return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"rendezvous server {addr}:{port} (hosted by rank 0) not reachable after {timeout_s:.0f} s: {exc}"
                ) from None
            time.sleep(0.2)


def main(argv: Sequence[str] | None = None) -> int:
    """The raw ``srun`` path: the same per-rank flow as the launcher's task, without submitit."""
    parser = argparse.ArgumentParser(
        prog="python -m launchers.bootstrap",
        description="Set Horovod's variables from Slurm's, host the Gloo rendezvous on rank 0, run COMMAND.",
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
    from launchers.task import TrainerTask

    try:
        TrainerTask(command, {}, os.path.abspath(args.folder), args.rendezvous_timeout)()
    except BootstrapError as exc:
        log.error("%s", exc)
        return 2
    return 0  # a failing trainer ended this process with its own exit code already


if __name__ == "__main__":
    sys.exit(main())
