"""On Slurm, with real Unix users: only the gateway's own Slurm jobs are believed (issue 29, holes 4 and 7).

bob, a cluster user with no gateway token at all, submits jobs of his own whose names and comments are crafted to
read as alice's: ``Key=Value`` pairs naming her job as a COMPLETED array of five million elements, newlines and
unit separators that split a line into forged records. Meanwhile alice's job, sent by the gateway, sleeps a few
seconds: it must be tracked to its true end (what sacct says of it), with the gateway answering and its memory
bounded. Then a row left ``dispatching`` by a crash: bob's job with the comment ``hpcgw:<her id>`` is not adopted
in its place, while her own job with that comment is.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session

from devcluster.spec import ClusterSpec
from gateway.store.db import make_engine, migrate
from gateway.store.models import Job, utcnow
from gateway.submit.comments import slurm_comment
from gateway.worker.reconcile import reconcile
from tests.slurm.tenants import Gateway, as_user, gateway_memory_kib, run_gateway

pytestmark = [pytest.mark.slurm, pytest.mark.security]

SLEEP_S = 6
RSS_GROWTH_LIMIT_KB = 150 * 1024  # five million ids as strings would be several hundred MB


ACCOUNTING_DOWN = "sacct: error: Problem talking to the database: Connection refused"


@pytest.fixture
def gw(cluster: ClusterSpec, tmp_path: Path) -> Iterator[Gateway]:
    """The gateway of :func:`run_gateway`, whose sacct fails while ``<root>/accounting-down`` exists: it then
    tracks its jobs from slurmctld's list of every user's jobs, the records bob writes into."""
    wrappers = tmp_path / "bin"
    wrappers.mkdir()
    real = shutil.which("sacct")
    flag = tmp_path / "accounting-down"
    script = wrappers / "sacct"
    script.write_text(
        f'#!/bin/sh\nif [ -e "{flag}" ]; then echo "{ACCOUNTING_DOWN}" >&2; exit 1; fi\nexec {real} "$@"\n'
    )
    script.chmod(0o755)
    with run_gateway(tmp_path, path_prefix=wrappers) as gateway:
        yield gateway


def bob_sbatch(*options: str) -> str:
    """A held job of bob's own (no gateway involved), in his own partition and account."""
    done = as_user(
        "bob", ["sbatch", "--parsable", "--hold", "-p", "team-b", "-A", "team-b", *options, "--wrap", "true"]
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().split(";")[0]


def sacct_row(slurm_id: str) -> dict[str, str]:
    """What accounting says of one job (it may take slurmdbd a moment to hear of a new one)."""
    fields = ["JobID", "User", "Account", "State", "Start", "End"]
    argv = ["sacct", "-X", "-n", "-P", "--delimiter=\x1e", "-o", ",".join(fields), "-j", slurm_id]
    for _ in range(40):
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        lines = [line.split("\x1e") for line in out.split("\n") if line.count("\x1e") == len(fields) - 1]
        rows = [dict(zip(fields, parts, strict=True)) for parts in lines]
        if found := [r for r in rows if r["JobID"] == slurm_id]:
            return found[0]
        time.sleep(0.5)
    raise AssertionError(f"accounting has no job {slurm_id}: {out!r}")


def stamp(value: str) -> datetime:
    """sacct's local time, as an aware UTC time."""
    return datetime.fromisoformat(value).astimezone(UTC)


def forged(master: str, job_id: str) -> list[tuple[str, str]]:
    """(name, comment) pairs that read as alice's job to a parser of space- or line-separated text."""
    fields = (
        f"JobId={master} ArrayJobId={master} ArrayTaskId=0-5000000 JobState=COMPLETED UserId=alice(1001) "
        f"Account=team-a ExitCode=0:0 Comment={slurm_comment(job_id)} SubmitTime=2030-01-01T00:00:00"
    )
    row = "\x1f".join([master, master, "x", "COMPLETED", "0:0", "team-a", "team-a", "1", "n1"])
    return [
        (f"x {fields}", slurm_comment(job_id)),
        ("y", f"{slurm_comment(job_id)}\n{fields}\n{row}\x1f\x1f\x1f\x1f\x1f\x1f{slurm_comment(job_id)}"),
        (f"z\n{fields}", f"c\x1f{fields}"),
    ]


def test_forged_records_of_another_user_are_not_believed(gw: Gateway) -> None:
    gw.algorithm("sleeper-a", "team-a", f"import time; time.sleep({SLEEP_S})")
    job = gw.job("alice", "sleeper-a")
    deadline = time.monotonic() + 60
    while not (seen := gw.get(f"/v1/jobs/{job['id']}", "alice")).get("slurm_job_id"):
        assert time.monotonic() < deadline, seen
        time.sleep(0.2)
    slurm_id = seen["slurm_job_id"]
    master = slurm_id.split("_", 1)[0]
    rss_before = gateway_memory_kib()
    (gw.root / "accounting-down").touch()  # from now on the gateway reads every user's jobs from slurmctld

    bobs = [bob_sbatch(f"--job-name={name}", f"--comment={comment}") for name, comment in forged(master, job["id"])]
    slow: list[float] = []
    stop = threading.Event()

    def watch_health() -> None:
        while not stop.is_set():
            started = time.monotonic()
            response = httpx.get(f"{gw.base}/healthz", timeout=5)
            elapsed = time.monotonic() - started
            if response.status_code >= 500 or elapsed > 1.0:
                slow.append(elapsed)
            time.sleep(0.3)

    watcher = threading.Thread(target=watch_health, daemon=True)
    watcher.start()
    try:
        states = []
        while (now := gw.get(f"/v1/jobs/{job['id']}", "alice"))["state"] not in ("succeeded", "failed", "cancelled"):
            states.append(now["state"])
            assert time.monotonic() < deadline + 180, now
            time.sleep(0.3)
        rss_after = gateway_memory_kib()
    finally:
        (gw.root / "accounting-down").unlink(missing_ok=True)
        stop.set()
        watcher.join(timeout=10)
        subprocess.run(["scancel", *bobs], check=False)

    assert now["state"] == "succeeded", now
    truth = sacct_row(slurm_id)
    assert (truth["User"], truth["Account"], truth["State"]) == ("alice", "team-a", "COMPLETED"), truth
    # tracked to its true end: Slurm ran it for the sleeper's seconds, and the gateway ended it no earlier
    ran, ended = stamp(truth["End"]) - stamp(truth["Start"]), datetime.fromisoformat(now["end_time"])
    assert ran >= timedelta(seconds=SLEEP_S - 1), truth
    assert ended.astimezone(UTC) >= stamp(truth["End"]) - timedelta(seconds=2), (now, truth)
    assert not slow, f"/healthz slow or failing: {slow}"
    assert "; falling back to" in (gw.root / "gateway.log").read_text()  # the path bob's records reach
    assert rss_after - rss_before < RSS_GROWTH_LIMIT_KB, (rss_before, rss_after)
    for bob_job in bobs:  # bob's jobs are bob's: untouched by the gateway
        assert sacct_row(bob_job)["User"] == "bob"


def orphan(engine_url: str, user: str, account: str, partition: str, folder: Path) -> str:
    """A row a crash left between its dispatch mark and the record of its Slurm id."""
    engine = make_engine(engine_url)
    with Session(engine) as session:
        job = Job(
            name="orphan",
            team="team-a",
            user=user,
            partition=partition,
            account=account,
            nodes=1,
            tasks_per_node=1,
            gpus_per_node=0,
            cpus_per_task=1,
            time_limit_min=5,
            algorithm="a",
            algorithm_version="1",
            image="/images/a.sif",
            command=["true"],
            dataset_id="d",
            train_data_version_hash="v1",
            parameters={},
            folder=str(folder),
            submit_folder=str(folder / "job"),
            dispatching=True,
            dispatch_time=utcnow() - timedelta(seconds=30),
        )
        session.add(job)
        session.commit()
        return job.id


def test_adoption_takes_only_the_rows_own_users_job(cluster: ClusterSpec, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gw.db'}"
    migrate(make_engine(url))
    victim = orphan(url, "alice", "team-a", "team-a", tmp_path / "victim")
    control = orphan(url, "alice", "team-a", "team-a", tmp_path / "control")
    # bob puts alice's comments on jobs of his own; alice's own job carries the control row's comment
    stolen = bob_sbatch(f"--comment={slurm_comment(victim)}")
    stolen_in_a = as_user(
        "bob",
        ["sbatch", "--parsable", "--hold", "-p", "team-a", f"--comment={slurm_comment(control)}", "--wrap", "true"],
    )
    theirs = [stolen, *([stolen_in_a.stdout.strip()] if stolen_in_a.returncode == 0 else [])]
    own = as_user(
        "alice",
        [
            "sbatch",
            "--parsable",
            "--hold",
            "-p",
            "team-a",
            "-A",
            "team-a",
            f"--comment={slurm_comment(control)}",
            "--wrap=true",
        ],
    )
    assert own.returncode == 0, own.stderr
    alices = own.stdout.strip()
    try:
        engine = make_engine(url)
        assert reconcile(engine, grace_s=0.0) is True
        with Session(engine) as session:
            released, adopted = session.get(Job, victim), session.get(Job, control)
            assert released is not None and adopted is not None
            assert (released.slurm_job_id, released.dispatching) == (None, False)  # sent again, as alice
            assert adopted.slurm_job_id == alices and adopted.slurm_job_id not in theirs
        truth = sacct_row(alices)
        assert (truth["User"], truth["Account"]) == ("alice", "team-a")
        for job_id in theirs:
            assert sacct_row(job_id)["User"] == "bob"
    finally:
        subprocess.run(["scancel", *theirs, alices], check=False)
