"""Each team's limits and share, kept where Slurm enforces them: its accounting (accounts, users, associations).

A limit the gateway alone held would bind the gateway's own path and nothing else: sweeps already in Slurm,
jobs from a login node and a second gateway would pass it. Written into the team's Slurm account (``GrpJobs``,
``GrpSubmitJobs``, ``GrpTRES``, ``MaxTRES``, ``Fairshare``), with ``AccountingStorageEnforce=associations,limits``
on the cluster, it holds for every path. The configuration is the source of truth: ``hpcgw accounts sync``
writes it into Slurm (as a Slurm administrator), ``hpcgw accounts check`` reports drift (as anyone).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.config import GatewayConfig
from launchers.slurm.scontrol import SHOW_CONFIG_ARGV, parse_config_value
from launchers.slurm.shell import run

ASSOC_FIELDS = ("cluster", "account", "user", "fairshare", "grpjobs", "grpsubmit", "grptres", "maxtres")
ASSOC_ARGV = ["sacctmgr", "-n", "-P", "show", "assoc", f"format={','.join(ASSOC_FIELDS)}"]
TIMEOUT_S = 60.0


@dataclass(frozen=True)
class AccountLimits:
    """One team's account association, as Slurm names its fields."""

    fairshare: int | None = None
    grp_jobs: int | None = None
    grp_submit: int | None = None
    grp_tres: Mapping[str, int] = field(default_factory=dict)
    max_tres: Mapping[str, int] = field(default_factory=dict)

    def as_sacctmgr(self) -> list[str]:
        """``set`` arguments of ``sacctmgr add account`` / ``modify account``."""
        args = [
            f"fairshare={self.fairshare if self.fairshare is not None else 'parent'}",
            f"grpjobs={_count(self.grp_jobs)}",
            f"grpsubmitjobs={_count(self.grp_submit)}",
        ]
        args += [f"grptres={_tres(self.grp_tres)}"] if self.grp_tres else []
        return args + ([f"maxtres={_tres(self.max_tres)}"] if self.max_tres else [])


@dataclass
class Associations:
    """What Slurm holds (or should hold) for the gateway's teams: {account: limits}, {(account, user)}."""

    accounts: dict[str, AccountLimits] = field(default_factory=dict)
    users: set[tuple[str, str]] = field(default_factory=set)


def desired(config: GatewayConfig) -> Associations:
    """The associations the configuration asks for: an account per team with its limits, and every token's Unix
    user in its team's account (an admin's in every team's: an admin may submit for any team)."""
    wanted = Associations()
    for team in config.teams.values():
        tres = {"gres/gpu": team.max_gpus} | ({"cpu": team.max_cpus} if team.max_cpus else {})
        wanted.accounts[team.account] = AccountLimits(
            fairshare=team.fairshare,
            grp_jobs=team.max_running_jobs,
            grp_submit=team.max_running_jobs + team.max_queued_jobs,
            grp_tres=tres,
            max_tres={"node": team.max_nodes},
        )
    for token in config.tokens:
        teams = [token.team] if token.team else list(config.teams)
        wanted.users |= {(config.teams[t].account, token.account_name) for t in teams}
    return wanted


def parse_assocs(text: str, cluster: str | None) -> Associations:
    """``sacctmgr -n -P show assoc format=…`` (ASSOC_FIELDS) for ``cluster`` (None: every cluster)."""
    found = Associations()
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) != len(ASSOC_FIELDS):
            continue
        row = dict(zip(ASSOC_FIELDS, parts, strict=True))
        if cluster is not None and row["cluster"] != cluster:
            continue
        if row["user"]:
            found.users.add((row["account"], row["user"]))
            continue
        found.accounts[row["account"]] = AccountLimits(
            fairshare=_int(row["fairshare"]),
            grp_jobs=_int(row["grpjobs"]),
            grp_submit=_int(row["grpsubmit"]),
            grp_tres=_parse_tres(row["grptres"]),
            max_tres=_parse_tres(row["maxtres"]),
        )
    return found


def drift(wanted: Associations, actual: Associations) -> list[str]:
    """Every difference between the configuration and Slurm, one line each, in the configuration's terms."""
    lines = []
    for account, limits in wanted.accounts.items():
        have = actual.accounts.get(account)
        if have is None:
            lines.append(f"account {account}: missing in Slurm")
            continue
        for name, want, got in _fields(limits, have):
            if want != got:
                lines.append(f"account {account}: {name} is {_show(got)} in Slurm, {_show(want)} in the configuration")
    for account, user in sorted(wanted.users - actual.users):
        lines.append(f"user {user}: no association with account {account} in Slurm")
    return lines


def sync_commands(wanted: Associations, actual: Associations, cluster: str | None) -> list[list[str]]:
    """The ``sacctmgr -i`` calls that make Slurm hold what the configuration asks for (none when it does)."""
    where = [f"cluster={cluster}"] if cluster else []
    commands = []
    for account, limits in wanted.accounts.items():
        have = actual.accounts.get(account)
        if have is None:
            commands.append(
                ["sacctmgr", "-i", "add", "account", account, *where, "organization=hpcgw", *limits.as_sacctmgr()]
            )
        elif any(want != got for _, want, got in _fields(limits, have)):
            removed = AccountLimits(
                grp_tres={k: -1 for k in have.grp_tres if k not in limits.grp_tres},
                max_tres={k: -1 for k in have.max_tres if k not in limits.max_tres},
            )
            update = AccountLimits(
                limits.fairshare,
                limits.grp_jobs,
                limits.grp_submit,
                {**removed.grp_tres, **limits.grp_tres},
                {**removed.max_tres, **limits.max_tres},
            )
            commands.append(
                [
                    "sacctmgr",
                    "-i",
                    "modify",
                    "account",
                    "where",
                    f"name={account}",
                    *where,
                    "set",
                    *update.as_sacctmgr(),
                ]
            )
    for account, user in sorted(wanted.users - actual.users):
        commands.append(["sacctmgr", "-i", "add", "user", user, f"account={account}", *where])
    return commands


def slurm_env(config: GatewayConfig) -> dict[str, str] | None:
    """The cluster the configuration names (``slurm_conf``), for Slurm's commands; None: the environment's."""
    return None if config.slurm_conf is None else {"SLURM_CONF": str(config.slurm_conf)}


def cluster_name(env: Mapping[str, str] | None = None) -> str | None:
    """The cluster this machine's Slurm configuration names (associations are per cluster)."""
    return parse_config_value(run(SHOW_CONFIG_ARGV, timeout_s=TIMEOUT_S, env=env).stdout, "ClusterName")


def read(cluster: str | None, env: Mapping[str, str] | None = None) -> Associations:
    return parse_assocs(run(ASSOC_ARGV, timeout_s=TIMEOUT_S, env=env).stdout, cluster)


def plan(config: GatewayConfig) -> list[list[str]]:
    """The sacctmgr calls ``sync`` would make (read-only)."""
    env = slurm_env(config)
    cluster = cluster_name(env)
    return sync_commands(desired(config), read(cluster, env), cluster)


def sync(config: GatewayConfig) -> list[list[str]]:
    """Write the configuration's associations into Slurm; returns the sacctmgr calls it made."""
    commands = plan(config)
    for argv in commands:
        run(argv, timeout_s=TIMEOUT_S, env=slurm_env(config))
    return commands


def check(config: GatewayConfig) -> list[str]:
    env = slurm_env(config)
    return drift(desired(config), read(cluster_name(env), env))


def _fields(want: AccountLimits, got: AccountLimits) -> list[tuple[str, object, object]]:
    return [
        ("Fairshare", want.fairshare, got.fairshare),
        ("GrpJobs", want.grp_jobs, got.grp_jobs),
        ("GrpSubmitJobs", want.grp_submit, got.grp_submit),
        ("GrpTRES", dict(want.grp_tres), dict(got.grp_tres)),
        ("MaxTRES", dict(want.max_tres), dict(got.max_tres)),
    ]


def _int(text: str) -> int | None:
    return int(text) if text.strip().isdigit() else None


def _count(value: int | None) -> str:
    return "-1" if value is None else str(value)


def _tres(values: Mapping[str, int]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(values.items()))


def _parse_tres(text: str) -> dict[str, int]:
    result = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if sep and value.lstrip("-").isdigit():
            result[key] = int(value)
    return result


def _show(value: object) -> str:
    if value is None or value == {}:
        return "unset"
    if isinstance(value, dict):
        return _tres(value)
    return str(value)
