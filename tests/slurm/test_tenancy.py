"""On Slurm, with real Unix users: each job runs as its own user, teams cannot see each other's files nor the
gateway's state, and Slurm itself holds each team to its share, whatever path the jobs take.

The gateway runs as its own unprivileged user (``hpcgw``), started as a deployment starts it; alice (team-a),
bob (team-b) and carol (team-c) are the users `hpcgw cluster users` creates from config/example.toml, whose
teams' limits `hpcgw accounts sync` wrote into Slurm (team-a: GrpJobs 2).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from bench.support import HPCGW, toml_text
from devcluster.spec import ClusterSpec
from tests.conftest import EXAMPLE_CONFIG
from tests.slurm.support import RUNTIME, serve
from tests.slurm.tenants import Gateway, group, owner, run_gateway, tenant_settings

pytestmark = pytest.mark.slurm
PROBE = Path(__file__).parent.parent / "data" / "probe_files.py"


@pytest.fixture
def gw(cluster: ClusterSpec, tmp_path: Path) -> Iterator[Gateway]:
    with run_gateway(tmp_path) as gateway:
        yield gateway


def sacct(job_ids: list[str], fields: str) -> list[list[str]]:
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-j", ",".join(job_ids), "-o", fields], capture_output=True, text=True, check=True
    ).stdout
    return [line.split("|") for line in out.splitlines() if line]


def test_a_team_cannot_read_another_teams_files_nor_the_gateways_state(gw: Gateway) -> None:
    secret = (
        "import json, os; from pathlib import Path\n"
        "Path(os.environ['MODEL_OUTPUT_DIR'], 'model.bin').write_text('team-a weights')\n"
        "Path(os.environ['METRICS_FILE']).write_text(json.dumps({'epoch': 1, 'accuracy': 0.9}) + '\\n')\n"
        "print('team-a log line')\n"
    )
    gw.algorithm("secret", "team-a", secret)
    gw.script_algorithm("probe", "team-b", PROBE)
    alice = gw.wait(gw.job("alice", "secret")["id"], "alice")
    assert alice["state"] == "succeeded", alice
    a_folder = gw.root / "jobs" / "team-a" / alice["id"]
    targets = {
        "team-a's job folders": str(gw.root / "jobs" / "team-a"),
        "team-a's model": str(a_folder / "model" / "model.bin"),
        "team-a's metrics": str(a_folder / "metrics.jsonl"),
        "team-a's logs": str(next((a_folder / "job").glob("*_0_log.out"))),
        "the gateway's database": str(gw.root / "gw.db"),
        "the gateway's configuration": str(gw.root / "gw.toml"),
    }
    probe = gw.job("bob", "probe", parameters={"PROBE_TARGETS": json.dumps(targets)})
    bob = gw.wait(probe["id"], "bob")
    assert bob["state"] == "succeeded", bob
    found = json.loads(Path(gw.root / "jobs" / "team-b" / bob["id"] / "model" / "probe.json").read_text())
    assert found["whoami"] == "bob" and "team-b" in found["groups"], found
    assert set(found["results"]) == {f"{how} {what}" for what in targets for how in ("read", "write")}, found
    # In an image, a path that is not bound is not there at all (Apptainer binds /tmp, where pytest's folders are,
    # by default): either way bob's job reaches none of it.
    kept_out = {"permission denied"} | ({"FileNotFoundError"} if RUNTIME == "apptainer" else set())
    assert {r for r, outcome in found["results"].items() if outcome.split(":")[0] not in kept_out} == set(), found
    # Slurm's accounting names the real user and the team's account of each job.
    rows = sacct([alice["slurm_job_id"], bob["slurm_job_id"]], "JobIDRaw,User,Account")
    assert sorted((user, account) for _, user, account in rows) == [("alice", "team-a"), ("bob", "team-b")], rows
    # What alice's job wrote is hers and her team's: the gateway read it through the team's group.
    model = (a_folder / "model" / "model.bin").stat()
    assert (owner(model.st_uid), group(model.st_gid)) == ("alice", "team-a")
    assert gw.get(f"/v1/jobs/{alice['id']}/metrics", "alice")["epochs"][0]["accuracy"] == 0.9


def test_one_teams_flood_does_not_delay_the_others_and_slurm_holds_it_to_its_limit(gw: Gateway) -> None:
    sleep = "import time; time.sleep(8)"
    gw.algorithm("flood", "team-a", sleep)
    gw.algorithm("one-b", "team-b", "print('b done')")
    gw.algorithm("one-c", "team-c", "print('c done')")
    flood = [gw.job("alice", "flood")["id"] for _ in range(4)]
    sweeps = []
    for _ in range(2):
        body = {
            "name": "s",
            "max_parallel": 2,
            "space": {"kind": "grid", "grid": {"LR": [0.1, 0.2, 0.3]}},
            "base": {"algorithm": "flood", "dataset_id": "d", "train_data_version_hash": "v1", "time_limit_min": 10},
        }
        sweeps.append(gw.post("/v1/sweeps", body, "alice")["id"])
    # alice on a login node, past the gateway: Slurm's limit on team-a's account holds these too.
    direct = [
        subprocess.run(
            ["runuser", "-u", "alice", "--", "sbatch", "--parsable", "-p", "team-a", "-A", "team-a", "-n1",
             "-o", "/dev/null", "--wrap", "sleep 8"],
            capture_output=True, text=True, check=True, cwd="/tmp",
        ).stdout.strip()
        for _ in range(3)
    ]  # fmt: skip
    deadline = time.monotonic() + 120
    while len(running_of("team-a")) < 2:  # team-a holds its whole share
        assert time.monotonic() < deadline, "team-a never reached its 2 running jobs"
        time.sleep(0.5)
    b = gw.job("bob", "one-b")
    c = gw.job("carol", "one-c")
    done_b, done_c = gw.wait(b["id"], "bob"), gw.wait(c["id"], "carol")
    assert done_b["state"] == done_c["state"] == "succeeded", (done_b, done_c)
    submitted = min(
        when(submit) for _, submit in sacct([done_b["slurm_job_id"], done_c["slurm_job_id"]], "JobIDRaw,Submit")
    )

    def team_a_ids() -> list[str]:
        ids = [i for j in flood if (i := gw.get(f"/v1/jobs/{j}", "alice")["slurm_job_id"])] + direct  # some wait
        for sweep_id in sweeps:
            ids += [t["slurm_job_id"] for t in gw.get(f"/v1/sweeps/{sweep_id}", "alice")["tasks"] if t["slurm_job_id"]]
        return ids

    deadline = time.monotonic() + 120
    while not [s for _, s in sacct(team_a_ids(), "JobIDRaw,Start") if submitted < when(s) < float("inf")]:
        assert time.monotonic() < deadline, "none of team-a's later work started"  # the evidence to compare with
        time.sleep(1)
    a_ids = team_a_ids()
    subprocess.run(["scancel", "-A", "team-a"], check=False)  # the rest of the flood is not needed
    rows = sacct([done_b["slurm_job_id"], done_c["slurm_job_id"]], "JobIDRaw,Start")
    others_started = {job: when(start) for job, start in rows}
    # Every team-a job Slurm started after B and C had been submitted started after both of them.
    a_runs = [(when(s), when(e)) for _, s, e in sacct_runs(a_ids) if when(s) != float("inf")]  # those that ran
    later = [start for start, _ in a_runs if start > submitted]
    assert later, a_runs
    assert all(start >= max(others_started.values()) for start in later), (others_started, later)
    # team-a never had more than its 2 jobs running at once, gateway's, sweeps' and direct ones together.
    assert max_concurrent(a_runs) <= 2, a_runs
    accounts = {account for _, account in sacct(a_ids, "JobIDRaw,Account")}
    assert accounts == {"team-a"}, accounts


def test_drift_between_the_configuration_and_slurm_is_reported_and_synced(cluster: ClusterSpec) -> None:
    check = [HPCGW, "accounts", "check", "--config", str(EXAMPLE_CONFIG)]
    clean = subprocess.run(check, capture_output=True, text=True)
    assert clean.returncode == 0 and "no drift" in clean.stdout, clean.stdout + clean.stderr
    try:
        subprocess.run(["sacctmgr", "-i", "modify", "account", "where", "name=team-b", "set", "GrpJobs=7"], check=True)
        drifted = subprocess.run(check, capture_output=True, text=True)
        assert drifted.returncode == 1, drifted.stdout + drifted.stderr
        assert "account team-b: GrpJobs is 7 in Slurm, 2 in the configuration" in drifted.stdout, drifted.stdout
    finally:
        synced = subprocess.run(
            [HPCGW, "accounts", "sync", "--config", str(EXAMPLE_CONFIG)], capture_output=True, text=True
        )
    assert synced.returncode == 0 and "grpjobs=2" in synced.stdout, synced.stdout + synced.stderr
    again = subprocess.run(check, capture_output=True, text=True)
    assert again.returncode == 0, again.stdout
    assert (
        "nothing to change"
        in subprocess.run(
            [HPCGW, "accounts", "sync", "--config", str(EXAMPLE_CONFIG)], capture_output=True, text=True
        ).stdout
    )


def test_serve_refuses_a_user_without_an_account_or_association(cluster: ClusterSpec, tmp_path: Path) -> None:
    settings = tenant_settings(tmp_path)
    settings["tokens"].append({"user": "mallory", "team": "team-b", "token": "mallory-dev-token-1234"})
    settings["teams"]["team-z"] = {"partitions": ["team-a"], "account": "team-z", "unix_group": "team-a"}
    config = tmp_path / "gw.toml"
    config.write_text(toml_text(settings))
    log = open(tmp_path / "serve.log", "ab")
    proc = serve([HPCGW, "serve", "--config", str(config), "--port", "18942"], log)
    assert proc.wait(timeout=60) == 2
    log.close()
    said = (tmp_path / "serve.log").read_text()
    assert "user mallory: no Unix account 'mallory'" in said, said
    assert "team account team-z: missing in Slurm" in said, said
    assert "hpcgw accounts sync" in said, said


# --- reading Slurm's record --------------------------------------------------------------------------------


def running_of(account: str) -> list[str]:
    out = subprocess.run(
        ["squeue", "-h", "-A", account, "-t", "RUNNING", "-o", "%i"], capture_output=True, text=True, check=True
    )
    return out.stdout.split()


def sacct_runs(job_ids: list[str]) -> list[list[str]]:
    return sacct(job_ids, "JobIDRaw,Start,End")


def when(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp() if stamp not in ("Unknown", "None", "") else float("inf")


def max_concurrent(runs: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in runs] + [(e, -1) for _, e in runs])  # an end before a start at the same second
    best = current = 0
    for _, step in events:
        current += step
        best = max(best, current)
    return best
