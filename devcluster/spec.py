"""What a development cluster looks like: its nodes, partitions, ports and where its files live."""

from __future__ import annotations

import json
import os
import re
import socket
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

DEFAULT_STATE_DIR = Path(".hpcgw/cluster")
_PARTITION_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_CLUSTER_RE = re.compile(r"^[a-z][a-z0-9]{0,39}$")
# Unix sockets live under the state directory; sun_path holds 108 bytes including the terminator.
_MAX_SOCKET_PATH = 100


class SpecError(ValueError):
    """The requested cluster cannot be built as asked."""


def default_state_dir() -> Path:
    return Path(os.environ.get("HPCGW_CLUSTER_DIR", DEFAULT_STATE_DIR)).resolve()


@dataclass(frozen=True)
class ClusterSpec:
    state_dir: Path = field(default_factory=default_state_dir)
    nodes: int = 2
    partitions: tuple[str, ...] = ("team-a", "team-b", "team-c")
    cluster_name: str = "hpcgw"
    cpus_per_node: int = 2
    memory_mb_per_node: int = 4000
    port_base: int = 16800
    max_array_size: int = 1001
    # Jobs leave slurmctld's memory this long after they end; tests want it short, sacct keeps the record.
    min_job_age_s: int = 10
    max_job_count: int = 100_000
    # Also how long a requeued job waits before it may start again (see ../shared/notes/slurm-devcluster.md).
    cred_expire_s: int = 30

    def __post_init__(self) -> None:
        object.__setattr__(self, "state_dir", Path(self.state_dir).resolve())
        object.__setattr__(self, "partitions", tuple(self.partitions))
        self.validate()

    def validate(self) -> None:
        if not 2 <= self.nodes <= 64:
            raise SpecError(f"nodes must be between 2 and 64, got {self.nodes}")
        if not self.partitions:
            raise SpecError("at least one partition is needed")
        for name in self.partitions:
            if not _PARTITION_RE.match(name):
                raise SpecError(f"invalid partition name {name!r}: use [a-z][a-z0-9_-]*, at most 32 characters")
        if len(set(self.partitions)) != len(self.partitions):
            raise SpecError(f"partition names repeat: {','.join(self.partitions)}")
        if not _CLUSTER_RE.match(self.cluster_name):
            raise SpecError(f"invalid cluster name {self.cluster_name!r}: lowercase letters and digits only")
        if not 1 <= self.cpus_per_node <= 256:
            raise SpecError(f"cpus_per_node must be between 1 and 256, got {self.cpus_per_node}")
        if self.memory_mb_per_node < 100:
            raise SpecError(f"memory_mb_per_node must be at least 100, got {self.memory_mb_per_node}")
        if not 1024 <= self.port_base <= 65535 - 100 - self.nodes:
            raise SpecError(f"port_base {self.port_base} leaves no room for the cluster's ports")
        if self.max_array_size < 1:
            raise SpecError(f"max_array_size must be at least 1, got {self.max_array_size}")
        if len(str(self.paths.munge_socket)) > _MAX_SOCKET_PATH:
            raise SpecError(
                f"state directory {self.state_dir} is too long for Unix sockets; "
                "choose a shorter one with --state-dir or HPCGW_CLUSTER_DIR"
            )

    @property
    def paths(self) -> ClusterPaths:
        return ClusterPaths(self.state_dir)

    @property
    def ports(self) -> ClusterPorts:
        return ClusterPorts(self.port_base)

    @property
    def node_names(self) -> list[str]:
        return [f"n{i}" for i in range(1, self.nodes + 1)]

    def node_port(self, index: int) -> int:
        return self.ports.slurmd_first + index

    @property
    def slurm_env(self) -> dict[str, str]:
        """What a client (sbatch, sacct, a test) needs in its environment to talk to this cluster."""
        return {"SLURM_CONF": str(self.paths.slurm_conf)}

    def to_json(self) -> str:
        data = asdict(self)
        data["state_dir"] = str(self.state_dir)
        data["partitions"] = list(self.partitions)
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ClusterSpec:
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def load(cls, state_dir: Path | None = None) -> ClusterSpec | None:
        """The spec the cluster in ``state_dir`` was last brought up with, if any."""
        path = ClusterPaths((state_dir or default_state_dir()).resolve()).spec_file
        return cls.from_json(path.read_text()) if path.exists() else None

    def save(self) -> None:
        self.paths.spec_file.write_text(self.to_json() + "\n")

    def template_context(self, db_password: str) -> dict[str, object]:
        return {
            "cluster_name": self.cluster_name,
            "controller_host": socket.gethostname().split(".")[0],
            "slurm_user": "root",
            "nodes": [{"name": n, "port": self.node_port(i)} for i, n in enumerate(self.node_names)],
            "partitions": list(self.partitions),
            "cpus_per_node": self.cpus_per_node,
            "memory_mb_per_node": self.memory_mb_per_node,
            "min_job_age_s": self.min_job_age_s,
            "max_array_size": self.max_array_size,
            "max_job_count": self.max_job_count,
            "cred_expire_s": self.cred_expire_s,
            "ports": self.ports.as_dict(),
            "paths": {k: str(v) for k, v in self.paths.as_dict().items()},
            "db": {"user": "slurm", "password": db_password, "name": "slurm_acct_db"},
        }


@dataclass(frozen=True)
class ClusterPorts:
    base: int

    @property
    def mariadb(self) -> int:
        return self.base + 6

    @property
    def slurmctld(self) -> int:
        return self.base + 17

    @property
    def slurmdbd(self) -> int:
        return self.base + 19

    @property
    def slurmd_first(self) -> int:
        return self.base + 100

    def as_dict(self) -> dict[str, int]:
        names = ("mariadb", "slurmctld", "slurmdbd", "slurmd_first")
        return {name: getattr(self, name) for name in names}


@dataclass(frozen=True)
class ClusterPaths:
    root: Path

    @property
    def etc(self) -> Path:
        return self.root / "etc"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def log(self) -> Path:
        return self.root / "log"

    @property
    def spool(self) -> Path:
        return self.root / "spool"

    @property
    def ctld_state(self) -> Path:
        return self.root / "state" / "ctld"

    @property
    def munge(self) -> Path:
        return self.root / "munge"

    @property
    def munge_socket(self) -> Path:
        return self.munge / "munge.socket"

    @property
    def munge_key(self) -> Path:
        return self.munge / "munge.key"

    @property
    def mariadb_data(self) -> Path:
        return self.root / "mariadb"

    @property
    def mariadb_socket(self) -> Path:
        return self.run / "mariadbd.sock"

    @property
    def slurm_conf(self) -> Path:
        return self.etc / "slurm.conf"

    @property
    def slurmdbd_conf(self) -> Path:
        return self.etc / "slurmdbd.conf"

    @property
    def my_cnf(self) -> Path:
        return self.etc / "my.cnf"

    @property
    def db_password_file(self) -> Path:
        return self.etc / "db-password"

    @property
    def spec_file(self) -> Path:
        return self.root / "cluster.json"

    @property
    def lock_file(self) -> Path:
        return self.root / ".lock"

    def as_dict(self) -> dict[str, Path]:
        names = [
            "etc",
            "run",
            "log",
            "spool",
            "ctld_state",
            "munge",
            "munge_socket",
            "mariadb_data",
            "mariadb_socket",
        ]
        return {name: getattr(self, name) for name in names}

    def directories(self) -> list[Path]:
        return [self.etc, self.run, self.log, self.spool, self.ctld_state, self.munge]
