"""Bring the development cluster up, report on it, and take it down.

`up` is idempotent: it starts only the daemons that are not running (in dependency order) and leaves healthy
ones alone. If anything this run started fails, it stops exactly those daemons again, so a failed `up` never
leaves a half-started cluster behind.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from devcluster import apptainer, prepare, probe
from devcluster.daemons import Daemon, DaemonError
from devcluster.errors import ClusterError
from devcluster.packages import PackagesMissingError, ensure_packages
from devcluster.spec import ClusterSpec, SpecError, default_state_dir
from devcluster.status import (
    NODE_READY_STATES,
    ClusterStatus,
    DaemonStatus,
    accounting,
    nodes,
    partitions,
)
from launchers.slurm.shell import CommandError, run
from launchers.slurm.squeue import IDS_ARGV

log = logging.getLogger(__name__)


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
            ready=lambda: probe.munge_ok(spec),
            extra_logs=[paths.log / "munged.log"],
        ),
        make(
            "mariadbd",
            ["mariadbd", f"--defaults-file={paths.my_cnf}", "--user=root"],
            tcp_port=ports.mariadb,
            ready=lambda: probe.ok(["mariadb-admin", f"--defaults-file={paths.my_cnf}", "ping"]),
            extra_logs=[paths.log / "mariadbd.log"],
        ),
        make(
            "slurmdbd",
            ["slurmdbd", "-D"],
            tcp_port=ports.slurmdbd,
            ready=lambda: probe.ok(["sacctmgr", "-n", "-P", "list", "cluster", "format=cluster"], env),
            extra_logs=[paths.log / "slurmdbd.log"],
        ),
        make(
            "slurmctld",
            ["slurmctld", "-D", "-f", str(paths.slurm_conf)],
            tcp_port=ports.slurmctld,
            ready=lambda: "UP" in probe.out(["scontrol", "ping"], env),
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
        conf_changed = prepare.write_files(spec)
        if apptainer.prepare_fuse():
            log.info("/dev/fuse made usable by the jobs' users (0666), for Apptainer's SIF mounts")
        ctld_was_running = any(d.name == "slurmctld" and d.is_running() for d in all_daemons)
        started: list[Daemon] = []
        try:
            for daemon in all_daemons:
                if daemon.name == "slurmctld":
                    prepare.register_cluster(spec)
                if daemon.is_running():
                    continue
                if daemon.name == "mariadbd":
                    prepare.init_mariadb(spec)
                daemon.start()
                started.append(daemon)
                daemon.wait_ready()
                if daemon.name == "mariadbd":
                    prepare.create_database(spec)
            if conf_changed and ctld_was_running:
                # A newer template on a running cluster: slurmctld and the slurmds re-read slurm.conf.
                run(["scontrol", "reconfigure"], env=spec.slurm_env)
            _wait_nodes(spec, all_daemons, nodes_timeout_s)
            prepare.register_accounts(spec)
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
        status.nodes = nodes(spec)
        status.partitions = partitions(spec)
    status.accounting_ok, status.accounting_detail = accounting(spec, running)
    status.apptainer = apptainer.apptainer_status()
    return status


# --- waiting and reporting ---------------------------------------------------------------------------------


def _wait_nodes(spec: ClusterSpec, all_daemons: list[Daemon], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        for daemon in all_daemons:
            if not daemon.is_running():
                raise DaemonError(daemon.name, "exited after start-up", daemon.log_tail())
        ready = nodes(spec)
        if ready and all(n.state in NODE_READY_STATES for n in ready):
            return
        for node in ready:
            if node.state in {"down", "drained", "draining", "drain", "fail"}:
                # A node left down by an earlier, stopped slurmd: it answers again, so put it back in service.
                run(
                    ["scontrol", "update", f"nodename={node.name}", "state=resume"],
                    env=spec.slurm_env,
                    check=False,
                )
        if time.monotonic() > deadline:
            states = ", ".join(f"{n.name}={n.state}" for n in ready) or "none reported"
            raise ClusterError(f"nodes not idle after {timeout_s:.0f} s: {states}")
        time.sleep(0.5)


def _cancel_all_jobs(spec: ClusterSpec) -> None:
    """Cancel the cluster's jobs before stopping it, so no slurmstepd outlives its slurmd."""
    ids = probe.out(IDS_ARGV, spec.slurm_env).split()
    if not ids:
        return
    run(["scancel", *ids], env=spec.slurm_env, check=False)
    deadline = time.monotonic() + 15
    while probe.out(IDS_ARGV, spec.slurm_env).split() and time.monotonic() < deadline:
        time.sleep(0.5)


# --- small helpers -----------------------------------------------------------------------------------------


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
