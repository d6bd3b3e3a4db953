"""Bring the development cluster up, report on it, and take it down.

`up` is idempotent: it starts only the daemons that are not running (in dependency order) and leaves healthy
ones alone. If anything this run started fails, it stops exactly those daemons again, so a failed `up` never
leaves a half-started cluster behind.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from devcluster.daemons import Daemon, DaemonError
from devcluster.packages import PackagesMissingError, ensure_packages
from devcluster.spec import ClusterSpec, SpecError, default_state_dir
from launchers.slurm.shell import CommandError, run
from launchers.slurm.sinfo import SinfoRow, parse_sinfo, sinfo_argv
from launchers.slurm.squeue import IDS_ARGV
from launchers.templates import render

log = logging.getLogger(__name__)

NODE_READY_STATES = frozenset({"idle", "mixed", "allocated", "completing"})


class ClusterError(RuntimeError):
    """`cluster up`/`down` could not do what was asked; the message says what to do."""


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
        }


def daemons(spec: ClusterSpec) -> list[Daemon]:
    """The cluster's daemons, in the order they must start."""
    paths, ports, env = spec.paths, spec.ports, spec.slurm_env

    def make(name: str, argv: list[str], **kw: object) -> Daemon:
        return Daemon(name=name, argv=argv, run_dir=paths.run, log_dir=paths.log, env=env, **kw)  # type: ignore[arg-type]

    result = [
        make(
            "munged",
            [
                "munged",
                "--foreground",
                f"--socket={paths.munge_socket}",
                f"--key-file={paths.munge_key}",
                f"--pid-file={paths.run}/munged.pid",
                f"--log-file={paths.log}/munged.log",
                f"--seed-file={paths.munge}/munged.seed",
            ],
            ready=lambda: _munge_ok(spec),
            extra_logs=[paths.log / "munged.log"],
        ),
        make(
            "mariadbd",
            ["mariadbd", f"--defaults-file={paths.my_cnf}", "--user=root"],
            tcp_port=ports.mariadb,
            ready=lambda: _ok(["mariadb-admin", f"--defaults-file={paths.my_cnf}", "ping"]),
            extra_logs=[paths.log / "mariadbd.log"],
        ),
        make(
            "slurmdbd",
            ["slurmdbd", "-D"],
            tcp_port=ports.slurmdbd,
            ready=lambda: _ok(["sacctmgr", "-n", "-P", "list", "cluster", "format=cluster"], env),
            extra_logs=[paths.log / "slurmdbd.log"],
        ),
        make(
            "slurmctld",
            ["slurmctld", "-D", "-f", str(paths.slurm_conf)],
            tcp_port=ports.slurmctld,
            ready=lambda: "UP" in _out(["scontrol", "ping"], env),
            extra_logs=[paths.log / "slurmctld.log"],
        ),
    ]
    for index, node in enumerate(spec.node_names):
        result.append(
            make(
                f"slurmd-{node}",
                ["slurmd", "-D", "-N", node, "-f", str(paths.slurm_conf)],
                tcp_port=spec.node_port(index),
                extra_logs=[paths.log / f"slurmd-{node}.log"],
            )
        )
    return result


def cluster_up(
    spec: ClusterSpec | None = None, *, allow_install: bool = True, nodes_timeout_s: float = 90.0
) -> ClusterStatus:
    """Bring the cluster up (or leave it be when healthy) and return its status."""
    state_dir = spec.state_dir if spec else default_state_dir()
    previous = ClusterSpec.load(state_dir)
    spec = spec or previous or ClusterSpec(state_dir=state_dir)
    if os.geteuid() != 0:
        try:
            ensure_packages(allow_install=False)
        except PackagesMissingError as exc:
            raise ClusterError(str(exc)) from None
        raise ClusterError(
            "a local development cluster needs root (slurmd runs jobs as their users); run it as root, "
            "or use your site's Slurm: set SLURM_CONF or have sbatch on PATH"
        )
    try:
        ensure_packages(allow_install=allow_install)
    except PackagesMissingError as exc:
        raise ClusterError(str(exc)) from None

    with _locked(spec):
        all_daemons = daemons(spec)
        if previous is not None and previous != spec and any(d.is_running() for d in daemons(previous)):
            raise ClusterError(
                f"a cluster with other settings is running from {state_dir}; run `hpcgw cluster down` first"
            )
        conf_changed = _prepare(spec)
        ctld_was_running = any(d.name == "slurmctld" and d.is_running() for d in all_daemons)
        started: list[Daemon] = []
        try:
            for daemon in all_daemons:
                if daemon.name == "slurmctld":
                    _register_cluster(spec)
                if daemon.is_running():
                    continue
                if daemon.name == "mariadbd":
                    _init_mariadb(spec)
                daemon.start()
                started.append(daemon)
                daemon.wait_ready()
                if daemon.name == "mariadbd":
                    _create_database(spec)
            if conf_changed and ctld_was_running:
                # A newer template on a running cluster: slurmctld and the slurmds re-read slurm.conf.
                run(["scontrol", "reconfigure"], env=spec.slurm_env)
            _wait_nodes(spec, all_daemons, nodes_timeout_s)
            _register_accounts(spec)
        except (DaemonError, CommandError, ClusterError) as exc:
            for daemon in reversed(started):
                daemon.stop()
            names = ", ".join(d.name for d in started) or "nothing"
            raise ClusterError(f"{exc}\n(cluster up stopped what it had started: {names})") from exc
        spec.save()
    return cluster_status(spec.state_dir)


def cluster_down(state_dir: os.PathLike[str] | str | None = None) -> list[str]:
    """Stop every daemon this project started in ``state_dir``; returns the names of those it stopped."""
    spec = ClusterSpec.load(None if state_dir is None else Path(state_dir))
    if spec is None:
        return []
    with _locked(spec):
        all_daemons = daemons(spec)
        ctld = next(d for d in all_daemons if d.name == "slurmctld")
        if ctld.is_running():
            _cancel_all_jobs(spec)
        return [d.name for d in reversed(all_daemons) if d.stop()]


def cluster_status(state_dir: os.PathLike[str] | str | None = None) -> ClusterStatus:
    spec = ClusterSpec.load(None if state_dir is None else Path(state_dir))
    status = ClusterStatus(state_dir=str(spec.state_dir if spec else state_dir or default_state_dir()), spec=spec)
    if spec is None:
        status.accounting_detail = "no cluster has been brought up here"
        return status
    status.daemons = [DaemonStatus(d.name, d.pid() is not None, d.pid()) for d in daemons(spec)]
    running = {d.name for d in status.daemons if d.running}
    if "slurmctld" in running:
        status.nodes = _nodes(spec)
        status.partitions = _partitions(spec)
    status.accounting_ok, status.accounting_detail = _accounting(spec, running)
    return status


# --- preparation -------------------------------------------------------------------------------------------


def _prepare(spec: ClusterSpec) -> bool:
    """Create directories, keys and configuration; returns whether slurm.conf changed."""
    paths = spec.paths
    for parent in spec.state_dir.parents:
        if parent.exists() and not parent.stat().st_mode & 0o001:
            raise ClusterError(
                f"munged refuses a socket below {parent}, which not everyone may traverse; "
                f"choose another --state-dir, or chmod o+x {parent}"
            )
    for directory in (spec.state_dir, *paths.directories()):
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o755)  # munged insists that everyone may traverse to its socket
    for node in spec.node_names:
        (paths.spool / node).mkdir(exist_ok=True)
    if not paths.munge_key.exists():
        run(["mungekey", "--create", f"--keyfile={paths.munge_key}"])
    paths.munge_key.chmod(0o600)
    if not paths.db_password_file.exists():
        paths.db_password_file.write_text(secrets.token_hex(16) + "\n")
        paths.db_password_file.chmod(0o600)
    context = spec.template_context(paths.db_password_file.read_text().strip())
    conf_changed = _write(paths.slurm_conf, render("cluster/slurm.conf.j2", **context), 0o644)
    _write(paths.slurmdbd_conf, render("cluster/slurmdbd.conf.j2", **context), 0o600)
    _write(paths.my_cnf, render("cluster/my.cnf.j2", **context), 0o644)
    return conf_changed


def _write(path: Path, text: str, mode: int) -> bool:
    changed = not path.exists() or path.read_text() != text
    if changed:
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text)
        tmp.chmod(mode)
        tmp.replace(path)
    path.chmod(mode)
    return changed


def _init_mariadb(spec: ClusterSpec) -> None:
    data = spec.paths.mariadb_data
    if (data / "mysql").is_dir():
        return
    data.mkdir(parents=True, exist_ok=True)
    try:
        run(
            [
                "mariadb-install-db",
                f"--defaults-file={spec.paths.my_cnf}",
                "--user=root",
                "--auth-root-authentication-method=socket",
                "--skip-test-db",
            ],
            timeout_s=300,
        )
    except CommandError as exc:
        raise DaemonError("mariadbd", "mariadb-install-db failed", exc.stderr[-2000:] or exc.stdout[-2000:]) from exc


def _create_database(spec: ClusterSpec) -> None:
    password = spec.paths.db_password_file.read_text().strip()
    statements = ["CREATE DATABASE IF NOT EXISTS slurm_acct_db"]
    for host in ("127.0.0.1", "localhost"):
        statements += [
            f"CREATE USER IF NOT EXISTS 'slurm'@'{host}' IDENTIFIED BY '{password}'",
            f"ALTER USER 'slurm'@'{host}' IDENTIFIED BY '{password}'",
            f"GRANT ALL ON slurm_acct_db.* TO 'slurm'@'{host}'",
        ]
    run(["mariadb", f"--defaults-file={spec.paths.my_cnf}", "-e", "; ".join(statements)])


def _register_cluster(spec: ClusterSpec) -> None:
    env = spec.slurm_env
    clusters = _out(["sacctmgr", "-n", "-P", "list", "cluster", "format=cluster"], env).split()
    if spec.cluster_name not in clusters:
        run(["sacctmgr", "-i", "add", "cluster", spec.cluster_name], env=env)


def _register_accounts(spec: ClusterSpec) -> None:
    """One account per partition (named after it), with root in each: what the gateway's teams map onto."""
    env = spec.slurm_env
    accounts = set(_out(["sacctmgr", "-n", "-P", "list", "account", "format=account"], env).split())
    for name in spec.partitions:
        if name not in accounts:
            run(
                [
                    "sacctmgr",
                    "-i",
                    "add",
                    "account",
                    name,
                    f"cluster={spec.cluster_name}",
                    f"description=team {name}",
                    "organization=hpcgw",
                ],
                env=env,
            )
    assocs = set(_out(["sacctmgr", "-n", "-P", "list", "assoc", "format=account,user"], env).split())
    missing = [name for name in spec.partitions if f"{name}|root" not in assocs]
    if missing:
        run(
            [
                "sacctmgr",
                "-i",
                "add",
                "user",
                "root",
                f"account={','.join(missing)}",
                f"cluster={spec.cluster_name}",
            ],
            env=env,
        )


# --- waiting and reporting ---------------------------------------------------------------------------------


def _wait_nodes(spec: ClusterSpec, all_daemons: list[Daemon], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        for daemon in all_daemons:
            if not daemon.is_running():
                raise DaemonError(daemon.name, "exited after start-up", daemon.log_tail())
        nodes = _nodes(spec)
        if nodes and all(n.state in NODE_READY_STATES for n in nodes):
            return
        for node in nodes:
            if node.state in {"down", "drained", "draining", "drain", "fail"}:
                # A node left down by an earlier, stopped slurmd: it answers again, so put it back in service.
                run(
                    ["scontrol", "update", f"nodename={node.name}", "state=resume"],
                    env=spec.slurm_env,
                    check=False,
                )
        if time.monotonic() > deadline:
            states = ", ".join(f"{n.name}={n.state}" for n in nodes) or "none reported"
            raise ClusterError(f"nodes not idle after {timeout_s:.0f} s: {states}")
        time.sleep(0.5)


def _nodes(spec: ClusterSpec) -> list[NodeStatus]:
    nodes: dict[str, NodeStatus] = {}
    for row in _sinfo(spec):
        nodes.setdefault(row.node, NodeStatus(row.node, row.state, [])).partitions.append(row.partition)
    return list(nodes.values())


def _partitions(spec: ClusterSpec) -> list[PartitionStatus]:
    members: dict[str, list[SinfoRow]] = {}
    for row in _sinfo(spec):
        members.setdefault(row.partition, []).append(row)
    return [PartitionStatus(name, rows[0].available, ",".join(r.node for r in rows)) for name, rows in members.items()]


def _sinfo(spec: ClusterSpec) -> list[SinfoRow]:
    return parse_sinfo(_out(sinfo_argv(), spec.slurm_env))


def _accounting(spec: ClusterSpec, running: set[str]) -> tuple[bool, str]:
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


def _cancel_all_jobs(spec: ClusterSpec) -> None:
    """Cancel the cluster's jobs before stopping it, so no slurmstepd outlives its slurmd."""
    ids = _out(IDS_ARGV, spec.slurm_env).split()
    if not ids:
        return
    run(["scancel", *ids], env=spec.slurm_env, check=False)
    deadline = time.monotonic() + 15
    while _out(IDS_ARGV, spec.slurm_env).split() and time.monotonic() < deadline:
        time.sleep(0.5)


# --- small helpers -----------------------------------------------------------------------------------------


def _munge_ok(spec: ClusterSpec) -> bool:
    socket_arg = f"--socket={spec.paths.munge_socket}"
    cred = run(["munge", "-n", socket_arg], check=False, timeout_s=10)
    if cred.returncode != 0:
        return False
    return run(["unmunge", socket_arg], input_text=cred.stdout, check=False, timeout_s=10).returncode == 0


def _ok(argv: list[str], env: dict[str, str] | None = None) -> bool:
    return run(argv, env=env, check=False, timeout_s=20).returncode == 0


def _out(argv: list[str], env: dict[str, str] | None = None) -> str:
    proc = run(argv, env=env, check=False, timeout_s=20)
    return proc.stdout if proc.returncode == 0 else ""


@contextmanager
def _locked(spec: ClusterSpec) -> Iterator[None]:
    """One `up`/`down` at a time per state directory."""
    spec.state_dir.mkdir(parents=True, exist_ok=True)
    with open(spec.paths.lock_file, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


__all__ = ["ClusterError", "ClusterStatus", "SpecError", "cluster_down", "cluster_status", "cluster_up"]
