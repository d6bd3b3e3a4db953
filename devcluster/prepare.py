"""Preparing the cluster's files (directories, keys, rendered configuration) and its accounting database:
everything `up` does before and between starting daemons."""

from __future__ import annotations

import secrets
from pathlib import Path

from devcluster.daemons import DaemonError
from devcluster.errors import ClusterError
from devcluster.probe import out
from devcluster.spec import ClusterSpec
from launchers.slurm.shell import CommandError, run
from launchers.templates import render


def write_files(spec: ClusterSpec) -> bool:
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


def init_mariadb(spec: ClusterSpec) -> None:
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


def create_database(spec: ClusterSpec) -> None:
    password = spec.paths.db_password_file.read_text().strip()
    statements = ["CREATE DATABASE IF NOT EXISTS slurm_acct_db"]
    for host in ("127.0.0.1", "localhost"):
        statements += [
            f"CREATE USER IF NOT EXISTS 'slurm'@'{host}' IDENTIFIED BY '{password}'",
            f"ALTER USER 'slurm'@'{host}' IDENTIFIED BY '{password}'",
            f"GRANT ALL ON slurm_acct_db.* TO 'slurm'@'{host}'",
        ]
    run(["mariadb", f"--defaults-file={spec.paths.my_cnf}", "-e", "; ".join(statements)])


def register_cluster(spec: ClusterSpec) -> None:
    env = spec.slurm_env
    clusters = out(["sacctmgr", "-n", "-P", "list", "cluster", "format=cluster"], env).split()
    if spec.cluster_name not in clusters:
        run(["sacctmgr", "-i", "add", "cluster", spec.cluster_name], env=env)


def register_accounts(spec: ClusterSpec) -> None:
    """One account per partition (named after it), with root in each: what the gateway's teams map onto."""
    env = spec.slurm_env
    accounts = set(out(["sacctmgr", "-n", "-P", "list", "account", "format=account"], env).split())
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
    assocs = set(out(["sacctmgr", "-n", "-P", "list", "assoc", "format=account,user"], env).split())
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
