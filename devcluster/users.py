"""The Unix side of a gateway configuration on the development machine: each team's group, each token's user
in it, the gateway's own unprivileged user (``hpcgw``, in every team's group), and the one sudoers rule that
lets that user run ``sbatch`` and ``scancel``, and nothing else, as the configured users.

A real site has its users and groups already (LDAP, SSSD); it writes the same sudoers rule (docs/security.md).
Everything here is idempotent: it creates what is missing and leaves what exists alone.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import shutil
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devcluster.errors import ClusterError
from gateway.site import acl
from launchers.slurm.shell import CommandError, run

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

GATEWAY_USER = "hpcgw"
SUDOERS_FILE = Path("/etc/sudoers.d/hpcgw")
SLURM_COMMANDS = ("sbatch", "scancel", "scontrol")


@dataclass
class UnixPlan:
    """Groups and users a configuration names: {group: members}, and the users whose jobs the gateway submits."""

    groups: dict[str, set[str]] = field(default_factory=dict)
    users: dict[str, str] = field(default_factory=dict)  # user -> primary group


def plan(teams: dict[str, str], tokens: list[tuple[str, str | None]]) -> UnixPlan:
    """``teams``: {team: its Unix group}; ``tokens``: (Unix user, team or None for an admin)."""
    result = UnixPlan(groups={group: {GATEWAY_USER} for group in teams.values()})
    for user, team in tokens:
        if team is not None:
            result.groups[teams[team]].add(user)
            result.users.setdefault(user, teams[team])
        else:  # an admin may submit for every team, so it belongs to all of them
            for group in teams.values():
                result.groups[group].add(user)
            result.users.setdefault(user, user)
    return result


def plan_from_config(settings: GatewayConfig) -> UnixPlan:
    teams = {name: settings.unix_group_of(name) for name in settings.teams}
    return plan(teams, [(t.account_name, t.team) for t in settings.tokens])


def sudoers_text(users: list[str]) -> str:
    commands = ", ".join(_which(c) for c in SLURM_COMMANDS)
    return (
        "# Written by `hpcgw cluster users`. The gateway's user may run sbatch, scancel and scontrol (the health\n"
        "# policy's requeue), and nothing else, as the users its configuration names, without a password;\n"
        "# SLURM_CONF passes through so that they reach the same cluster. root keeps it too: the tests run an\n"
        "# in-process gateway as root.\n"
        f'Defaults:{GATEWAY_USER}, root env_keep += "SLURM_CONF"\n'
        f"Defaults:{GATEWAY_USER} !requiretty\n"
        f"Runas_Alias HPCGW_JOB_USERS = {', '.join(sorted(users))}\n"
        f"{GATEWAY_USER} ALL = (HPCGW_JOB_USERS) NOPASSWD: {commands}\n"
    )


def ensure(unix: UnixPlan) -> list[str]:
    """Create what is missing; returns what it did, one line each."""
    if os.geteuid() != 0:
        raise ClusterError("creating Unix users and groups needs root")
    done = []
    if not _exists(pwd.getpwnam, GATEWAY_USER):
        _run(["useradd", "--system", "--user-group", "--create-home", "--shell", "/usr/sbin/nologin", GATEWAY_USER])
        done.append(f"user {GATEWAY_USER} (the gateway's own)")
    for group in unix.groups:
        if not _exists(grp.getgrnam, group):
            _run(["groupadd", group])
            done.append(f"group {group}")
    for user, primary in unix.users.items():
        if not _exists(pwd.getpwnam, user):
            extra = ["--user-group"] if primary == user else ["--gid", primary]
            _run(["useradd", "--create-home", "--shell", "/bin/bash", *extra, user])
            done.append(f"user {user}")
    done += open_for_jobs(
        [Path(sys.executable), Path(__file__)],
        users=[pwd.getpwnam(GATEWAY_USER).pw_uid],
        groups=sorted(grp.getgrnam(group).gr_gid for group in unix.groups),
    )
    for group, members in unix.groups.items():
        have = set(grp.getgrnam(group).gr_mem)
        for member in sorted(members - have):
            _run(["usermod", "--append", "--groups", group, member])
            done.append(f"{member} in group {group}")
    text = sudoers_text(list(unix.users))
    if not SUDOERS_FILE.exists() or SUDOERS_FILE.read_text() != text:
        tmp = SUDOERS_FILE.with_name(".hpcgw.tmp")  # sudo ignores names with a dot
        tmp.write_text(text)
        tmp.chmod(0o440)
        _run(["visudo", "-c", "-q", "-f", str(tmp)])
        tmp.replace(SUDOERS_FILE)
        done.append(f"sudoers rule {SUDOERS_FILE}")
    return done


def give_to_gateway(config_file: Path, database: Path | None, job_root: Path) -> list[str]:
    """The gateway's configuration, database and job root belong to its user (the first two readable by it
    alone); an earlier run as root may have left them root's. The team folders keep their team's group."""
    entry = pwd.getpwnam(GATEWAY_USER)
    private: list[tuple[Path, int]] = [(config_file, 0o600)]
    if database is not None:
        database.parent.mkdir(parents=True, exist_ok=True)
        private += [(database.parent, 0o700), *((f, 0o600) for f in database.parent.glob(database.name + "*"))]
    job_root.mkdir(parents=True, exist_ok=True)
    changed = []
    for path, mode in private:
        if (path.stat().st_uid, path.stat().st_gid) != (entry.pw_uid, entry.pw_gid):
            os.chown(path, entry.pw_uid, entry.pw_gid)
            changed.append(path)
        path.chmod(mode)
    for path in (job_root, *(p for p in job_root.iterdir() if p.is_dir())):
        if path.stat().st_uid != entry.pw_uid:
            os.chown(path, entry.pw_uid, -1)
            changed.append(path)
    return [f"{GATEWAY_USER} owns {p}" for p in changed]


def open_for_jobs(paths: list[Path], *, users: list[int], groups: list[int]) -> list[str]:
    """Let the gateway's user and the teams' groups traverse (never list) the private folders above ``paths``:
    they run this project's Python (a pyenv interpreter under /root, mode 0700 on a fresh machine) and read its
    code. An access list entry (``u:hpcgw:--x``, ``g:<team>:--x``) each, not ``o+x``: every other account of the
    machine stays out of /root. A folder everyone may read and enter is left alone; one others may only enter
    (``o+x`` alone: what earlier versions of this command did) loses it, for the entries."""
    done = []
    for path in paths:
        for folder in reversed(path.resolve().parents):
            mode = stat.S_IMODE(folder.stat().st_mode)
            if mode & 0o005 == 0o005:
                continue
            if _traversable_by(folder, mode & ~0o001, users, groups):
                if mode & 0o001:
                    folder.chmod(mode & ~0o001)
                    done.append(f"others may no longer traverse {folder} (o-x)")
                continue
            os.setxattr(folder, acl.ACCESS, _with_traversal(folder, mode & ~0o001, users, groups))
            done.append(f"the gateway's user and the teams' groups may traverse {folder} (an access list, not o+x)")
    return done


def _entries(folder: Path, mode: int) -> list[acl.Entry]:
    """The folder's access list, or the three entries its mode stands for; others' bits from ``mode``."""
    try:
        entries = [e for e in acl.decode(os.getxattr(folder, acl.ACCESS)) if e.tag != acl.OTHER]
    except OSError as exc:
        if exc.errno not in (errno.ENODATA, errno.EOPNOTSUPP):
            raise
        entries = [acl.Entry(acl.USER_OBJ, mode >> 6 & 7), acl.Entry(acl.GROUP_OBJ, mode >> 3 & 7)]
    return [*entries, acl.Entry(acl.OTHER, mode & 7)]


def _traversable_by(folder: Path, mode: int, users: list[int], groups: list[int]) -> bool:
    entries = _entries(folder, mode)
    named = {(e.tag, e.id) for e in entries if e.perm & 1}
    mask = next((e.perm for e in entries if e.tag == acl.MASK), 7)
    return (
        bool(mask & 1) and all((acl.USER, u) in named for u in users) and all((acl.GROUP, g) in named for g in groups)
    )


def _with_traversal(folder: Path, mode: int, users: list[int], groups: list[int]) -> bytes:
    entries = {(e.tag, e.id): e.perm for e in _entries(folder, mode) if e.tag != acl.MASK}
    for tag, ids in ((acl.USER, users), (acl.GROUP, groups)):
        for id_ in ids:
            entries[(tag, id_)] = entries.get((tag, id_), 0) | 1
    mask = 0
    for (tag, _id), perm in entries.items():
        if tag in (acl.USER, acl.GROUP_OBJ, acl.GROUP):
            mask |= perm
    return acl.encode([acl.Entry(tag, perm, id_) for (tag, id_), perm in entries.items()] + [acl.Entry(acl.MASK, mask)])


def as_gateway() -> dict[str, Any]:
    """``subprocess.Popen`` keyword arguments that run ``hpcgw serve`` as the gateway's own user, with its team
    groups: how the demo, the benchmarks and the tests start a gateway (they run as root; the gateway never
    does). Empty when this process is not root: it then runs as whoever this is."""
    if os.geteuid() != 0:
        return {}
    entry = pwd.getpwnam(GATEWAY_USER)
    groups = [g.gr_gid for g in grp.getgrall() if GATEWAY_USER in g.gr_mem]
    env = {**os.environ, "HOME": entry.pw_dir, "USER": GATEWAY_USER, "LOGNAME": GATEWAY_USER}
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": groups, "env": env}


def hand_over(*paths: Path) -> None:
    """Give files a gateway must own (its folder, its configuration) to the gateway's user (root only)."""
    if os.geteuid() != 0:
        return
    entry = pwd.getpwnam(GATEWAY_USER)
    for path in paths:
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _which(command: str) -> str:
    path = shutil.which(command)
    if path is None:
        raise ClusterError(f"{command} is not installed")
    return path


def _exists(lookup: object, name: str) -> bool:
    try:
        lookup(name)  # type: ignore[operator]
    except KeyError:
        return False
    return True


def _run(argv: list[str]) -> None:
    try:
        run(argv, timeout_s=60)
    except CommandError as exc:
        raise ClusterError(str(exc)) from exc
