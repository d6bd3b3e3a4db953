"""Where each rank sits, in Horovod's terms, derived from Slurm's variables: why not `horovodrun`? Under Slurm the
ranks are already placed by `srun`; Horovod only needs to be told who is who."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from launchers.slurm.hostlist import expand_hostlist, expand_tasks_per_node


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
