"""The teams' Slurm associations from the configuration: what sync asks sacctmgr for, and how drift reads,
on `sacctmgr show assoc` text captured from the local cluster."""

from __future__ import annotations

from pathlib import Path

from gateway.config import load_config
from gateway.site.accounts import AccountLimits, Associations, desired, drift, parse_assocs, sync_commands

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "example.toml"
# `sacctmgr -n -P show assoc format=cluster,account,user,fairshare,grpjobs,grpsubmit,grptres,maxtres`, after
# `hpcgw accounts sync --config config/example.toml` on the development cluster, then a second cluster's row.
SYNCED = """\
hpcgw|root||1||||
hpcgw|root|root|1||||
hpcgw|team-a||1|2|202|gres/gpu=0|node=2
hpcgw|team-a|admin|1||||node=2
hpcgw|team-a|alice|1||||node=2
hpcgw|team-a|dave|1||||node=2
hpcgw|team-a|root|1||||node=2
hpcgw|team-b||1|2|202|gres/gpu=0|node=2
hpcgw|team-b|admin|1||||node=2
hpcgw|team-b|bob|1||||node=2
hpcgw|team-b|root|1||||node=2
hpcgw|team-c||1|2|202|gres/gpu=0|node=2
hpcgw|team-c|admin|1||||node=2
hpcgw|team-c|carol|1||||node=2
other|team-a||1|9|||
"""


def test_the_example_asks_for_an_account_per_team_and_each_user_in_it() -> None:
    wanted = desired(load_config(EXAMPLE))
    assert wanted.accounts["team-a"] == AccountLimits(1, 2, 202, {"gres/gpu": 0}, {"node": 2})
    assert set(wanted.accounts) == {"team-a", "team-b", "team-c"}
    admin = {("team-a", "admin"), ("team-b", "admin"), ("team-c", "admin")}
    assert wanted.users == {("team-a", "alice"), ("team-a", "dave"), ("team-b", "bob"), ("team-c", "carol")} | admin


def test_a_synced_cluster_has_no_drift_and_nothing_to_change() -> None:
    wanted = desired(load_config(EXAMPLE))
    have = parse_assocs(SYNCED, "hpcgw")
    assert have.accounts["team-a"].grp_jobs == 2  # the other cluster's row is not this cluster's
    assert drift(wanted, have) == []
    assert sync_commands(wanted, have, "hpcgw") == []


def test_drift_names_each_difference_in_the_configurations_terms() -> None:
    wanted = desired(load_config(EXAMPLE))
    text = SYNCED.replace("hpcgw|team-b||1|2|202|gres/gpu=0|node=2", "hpcgw|team-b||5|7|202|cpu=4,gres/gpu=0|")
    text = text.replace("hpcgw|team-c|carol|1||||node=2\n", "").replace("hpcgw|team-c||1|2|202|gres/gpu=0|node=2\n", "")
    lines = drift(wanted, parse_assocs(text, "hpcgw"))
    assert lines == [
        "account team-b: Fairshare is 5 in Slurm, 1 in the configuration",
        "account team-b: GrpJobs is 7 in Slurm, 2 in the configuration",
        "account team-b: GrpTRES is cpu=4,gres/gpu=0 in Slurm, gres/gpu=0 in the configuration",
        "account team-b: MaxTRES is unset in Slurm, node=2 in the configuration",
        "account team-c: missing in Slurm",
        "user carol: no association with account team-c in Slurm",
    ]


def test_sync_adds_what_is_missing_and_resets_what_differs() -> None:
    wanted = desired(load_config(EXAMPLE))
    have = parse_assocs(SYNCED.replace("|2|202|gres/gpu=0|node=2", "|2|202|cpu=4,gres/gpu=0|node=2", 1), "hpcgw")
    have.accounts.pop("team-c")
    have.users.discard(("team-c", "carol"))
    assert sync_commands(wanted, have, "hpcgw") == [
        ["sacctmgr", "-i", "modify", "account", "where", "name=team-a", "cluster=hpcgw", "set",
         "fairshare=1", "grpjobs=2", "grpsubmitjobs=202", "grptres=cpu=-1,gres/gpu=0", "maxtres=node=2"],
        ["sacctmgr", "-i", "add", "account", "team-c", "cluster=hpcgw", "organization=hpcgw",
         "fairshare=1", "grpjobs=2", "grpsubmitjobs=202", "grptres=gres/gpu=0", "maxtres=node=2"],
        ["sacctmgr", "-i", "add", "user", "carol", "account=team-c", "cluster=hpcgw"],
    ]  # fmt: skip


def test_nothing_wanted_is_nothing_to_do() -> None:
    assert sync_commands(Associations(), parse_assocs(SYNCED, None), None) == []
