"""Who a job runs as, and what must exist for that before the gateway takes a request.

Every token maps to a Unix user and every team to a Unix group; jobs run as that user (sbatch through sudo),
so that Slurm's accounting and limits, and the file system's permissions, apply to them as to anything the
user runs from a login node. A mapping that points at nothing would only show up as failed sbatch calls
later, so ``hpcgw serve`` checks all of it at start-up and refuses to start with every problem named.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil

from gateway.config import GatewayConfig
from gateway.site import accounts
from gateway.site.folders import closed_ancestors
from launchers.slurm.privilege import SUDO, current_user
from launchers.slurm.shell import CommandError


def problems(config: GatewayConfig, *, slurm: bool = True) -> list[str]:
    """Everything that would keep a job of some token from running as its user; empty when all is in place."""
    found = []
    me = current_user()
    for team in config.teams:
        group = config.unix_group_of(team)
        try:
            members = set(grp.getgrnam(group).gr_mem)
        except KeyError:
            found.append(f"team {team}: no Unix group {group!r}")
            continue
        if os.geteuid() != 0 and group not in _groups_of(me):
            found.append(f"team {team}: the gateway's user {me!r} is not in the team's group {group!r}")
        for token in config.tokens:
            if token.team == team and token.account_name not in members | _primary_members(group):
                found.append(
                    f"user {token.user}: Unix user {token.account_name!r} is not in team {team}'s group {group!r}"
                )
    for closed in closed_ancestors(config.job_root):
        found.append(f"job_root: {closed} is closed to others (chmod o+x {closed}); the teams' jobs cannot reach it")
    for token in config.tokens:
        try:
            pwd.getpwnam(token.account_name)
        except KeyError:
            found.append(f"user {token.user}: no Unix account {token.account_name!r}")
    if any(t.account_name != me for t in config.tokens) and shutil.which(SUDO) is None:
        found.append("sudo is not installed: jobs cannot be submitted as their users (see docs/security.md)")
    if slurm:
        try:
            env = accounts.slurm_env(config)
            have = accounts.read(accounts.cluster_name(env), env)
        except CommandError as exc:
            found.append(f"cannot read Slurm's associations: {str(exc).splitlines()[0]}")
        else:
            wanted = accounts.desired(config)
            found += [f"team account {a}: missing in Slurm" for a in wanted.accounts if a not in have.accounts]
            found += [
                f"user {user}: Slurm has no association with account {account}"
                for account, user in sorted(wanted.users - have.users)
            ]
            if any("Slurm" in line for line in found):
                found.append("run `hpcgw accounts sync --config …` as a Slurm administrator")
    return found


def _groups_of(user: str) -> set[str]:
    entry = pwd.getpwnam(user)
    return {g.gr_name for g in grp.getgrall() if user in g.gr_mem} | {grp.getgrgid(entry.pw_gid).gr_name}


def _primary_members(group: str) -> set[str]:
    gid = grp.getgrnam(group).gr_gid
    return {p.pw_name for p in pwd.getpwall() if p.pw_gid == gid}
