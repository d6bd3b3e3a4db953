"""What `hpcgw cluster status` reports: each daemon, each node and partition as sinfo sees them, and whether
accounting answers."""

from __future__ import annotations

from dataclasses import dataclass, field

from devcluster.apptainer import ApptainerStatus
from devcluster.probe import out
from devcluster.spec import ClusterSpec
from launchers.slurm.shell import run
from launchers.slurm.sinfo import SinfoRow, parse_sinfo, sinfo_argv

NODE_READY_STATES = frozenset({"idle", "mixed", "allocated", "completing"})


@dataclass
class DaemonStatus:
    name: str
    running: bool
    pid: int | None


@dataclass
class NodeStatus:
    name: str
    state: str
    partitions: list[str]


@dataclass
class PartitionStatus:
    name: str
    available: str
    nodes: str


@dataclass
class ClusterStatus:
    state_dir: str
    spec: ClusterSpec | None
    daemons: list[DaemonStatus] = field(default_factory=list)
    nodes: list[NodeStatus] = field(default_factory=list)
    partitions: list[PartitionStatus] = field(default_factory=list)
    accounting_ok: bool = False
    accounting_detail: str = ""
    apptainer: ApptainerStatus | None = None  # what jobs find; not part of healthy (sites may run none)

    @property
    def healthy(self) -> bool:
        return (
            bool(self.daemons)
            and all(d.running for d in self.daemons)
            and bool(self.nodes)
            and all(n.state in NODE_READY_STATES for n in self.nodes)
            and self.accounting_ok
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "state_dir": self.state_dir,
            "healthy": self.healthy,
            "slurm_conf": str(self.spec.paths.slurm_conf) if self.spec else None,
            "daemons": [vars(d) for d in self.daemons],
            "nodes": [vars(n) for n in self.nodes],
            "partitions": [vars(p) for p in self.partitions],
            "accounting": {"ok": self.accounting_ok, "detail": self.accounting_detail},
            "apptainer": None if self.apptainer is None else vars(self.apptainer) | {"ok": self.apptainer.ok},
        }


def nodes(spec: ClusterSpec) -> list[NodeStatus]:
    nodes: dict[str, NodeStatus] = {}
    for row in sinfo_rows(spec):
        nodes.setdefault(row.node, NodeStatus(row.node, row.state, [])).partitions.append(row.partition)
    return list(nodes.values())


def partitions(spec: ClusterSpec) -> list[PartitionStatus]:
    members: dict[str, list[SinfoRow]] = {}
    for row in sinfo_rows(spec):
        members.setdefault(row.partition, []).append(row)
    return [PartitionStatus(name, rows[0].available, ",".join(r.node for r in rows)) for name, rows in members.items()]


def sinfo_rows(spec: ClusterSpec) -> list[SinfoRow]:
    return parse_sinfo(out(sinfo_argv(), spec.slurm_env))


def accounting(spec: ClusterSpec, running: set[str]) -> tuple[bool, str]:
    if "slurmdbd" not in running:
        return False, "slurmdbd is not running"
    proc = run(
        ["sacctmgr", "-n", "-P", "list", "cluster", "format=cluster,controlport"],
        env=spec.slurm_env,
        check=False,
        timeout_s=20,
    )
    if proc.returncode != 0:
        return False, f"sacctmgr failed: {proc.stderr.strip()}"
    rows = dict(line.split("|") for line in proc.stdout.split())
    if spec.cluster_name not in rows:
        return False, f"cluster {spec.cluster_name} is not registered in accounting"
    sacct = run(
        ["sacct", "-X", "-n", "-P", "-S", "now-1minutes", "-o", "JobID"],
        env=spec.slurm_env,
        check=False,
        timeout_s=20,
    )
    if sacct.returncode != 0:
        return False, f"sacct failed: {sacct.stderr.strip()}"
    if rows[spec.cluster_name] in ("", "0"):
        return True, "slurmdbd answers; slurmctld has not registered yet"
    return True, f"slurmdbd answers; cluster {spec.cluster_name} registered"
