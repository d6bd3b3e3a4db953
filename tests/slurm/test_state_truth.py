"""On Slurm: the gateway's state stays true through node failures and requeues.

A node's death is a killed slurmd and the node's job steps frozen (as a dead machine looks to the others),
on a private 3-node cluster: a 2-node job can then run again on the two nodes left, as on a real cluster
whose failed node stays down.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psutil
import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, col, create_engine, select

from bench.support import HPCGW
from devcluster import ClusterSpec, cluster_down, cluster_up
from devcluster.cluster import daemons
from gateway.app import create_app
from gateway.client import wait_healthy
from gateway.store.models import Job
from launchers.slurm.hostlist import expand_hostlist
from tests.conftest import set_up_tenancy
from tests.gateway.conftest import auth
from tests.slurm.support import (
    CLASSIFIER,
    QUICK,
    SLEEPER,
    classifier_job,
    gateway_config,
    history,
    in_image,
    serve,
    sleeper_job,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.slurm
# The first run holds after epoch 2's checkpoint until the test has failed its node or requeued it: a trainer free
# to run on can finish before the test acts. The run that resumes from that checkpoint starts past the hold.
LONG = {"SEED": 7, "EPOCHS": 12, "LR": 0.3, "BATCH_SIZE": 32, "FC_SIZE": 64, "PAUSE_AFTER_EPOCH": 2, "PAUSE_S": 300}


@pytest.fixture(scope="module")
def three_nodes() -> Iterator[ClusterSpec]:
    root = Path(tempfile.mkdtemp(prefix="hpcgw-nf-", dir="/tmp"))
    root.chmod(0o755)
    spec = ClusterSpec(state_dir=root / "cluster", port_base=25800, cluster_name="hpcgwnf", nodes=3)
    assert cluster_up(spec).healthy
    set_up_tenancy(spec)
    yield spec
    cluster_down(spec.state_dir)


@pytest.fixture
def on_three_nodes(three_nodes: ClusterSpec, monkeypatch: pytest.MonkeyPatch) -> Iterator[ClusterSpec]:
    """This test's Slurm commands (and its gateway's) talk to the private cluster; its nodes are all back after."""
    monkeypatch.setenv("SLURM_CONF", three_nodes.slurm_env["SLURM_CONF"])
    yield three_nodes
    assert cluster_up(three_nodes).healthy  # restarts the slurmd a test killed, and resumes its node


def freeze_node(spec: ClusterSpec, node: str) -> list[psutil.Process]:
    """What a dead machine looks like to the rest of its job: its slurmd is gone and nothing of the job on it
    answers, yet no connection is reset (killing the ranks would reset theirs on loopback and fail the others
    at once, before Slurm notices the node). Returns the frozen processes, for the test to kill later."""
    slurmd = next(d for d in daemons(spec) if d.name == f"slurmd-{node}")
    pid = slurmd.pid()
    assert pid is not None, f"slurmd of {node} is not running"
    os.kill(pid, signal.SIGKILL)
    frozen: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter():
        try:
            env = proc.environ()
            if env.get("SLURMD_NODENAME") == node and env.get("SLURM_CLUSTER_NAME") == spec.cluster_name:
                frozen[proc.pid] = proc
                parent = proc.parent()
                if parent is not None and parent.name().startswith("slurmstepd"):
                    frozen[parent.pid] = parent
        except (psutil.Error, OSError):
            continue
    assert frozen, f"no process of a job step on {node}"
    for proc in frozen.values():
        proc.suspend()
    return list(frozen.values())


def kill_all(processes: list[psutil.Process]) -> None:
    for proc in processes:
        try:
            proc.kill()
        except psutil.Error:
            pass


def utc(value: datetime) -> float:
    """SQLite hands back the stored UTC time without its zone."""
    return value.replace(tzinfo=UTC).timestamp()


def sacct_runs(slurm_id: str) -> list[list[str]]:
    out = subprocess.run(
        ["sacct", "-D", "-X", "-n", "-P", "-j", slurm_id, "-o", "State,NodeList,Comment"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line.split("|") for line in out.splitlines()]


def wait_epochs(client: TestClient, job_id: str, count: int, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while len(client.get(f"/v1/jobs/{job_id}/metrics", headers=auth("alice")).json()["epochs"]) < count:
        assert time.monotonic() < deadline, client.get(f"/v1/jobs/{job_id}", headers=auth("alice")).json()
        time.sleep(0.5)


@pytest.mark.faults  # one slurmd killed while a 2-node job runs
def test_a_failed_node_is_requeued_and_the_job_resumes_from_its_checkpoint(
    on_three_nodes: ClusterSpec, tmp_path: Path, dataset_hash: str
) -> None:
    app = create_app(gateway_config(tmp_path))
    with TestClient(app) as client:
        client.post("/v1/algorithms", json={**CLASSIFIER, "team": "team-a"}, headers=auth("admin"))
        body = classifier_job(dataset_hash, parameters=LONG, time_limit_min=20)
        job = client.post("/v1/jobs", json=body, headers=auth("alice")).json()
        wait_epochs(client, job["id"], 2)
        running = client.get(f"/v1/jobs/{job['id']}", headers=auth("alice")).json()
        slurm_id = running["slurm_job_id"]
        first_nodes = expand_hostlist(sacct_runs(slurm_id)[-1][1])
        victim = first_nodes[-1]
        frozen = freeze_node(on_three_nodes, victim)
        try:
            wait_for(client, job["id"], {"requeued"}, timeout_s=180)
        finally:
            kill_all(frozen)
        done = wait_for(client, job["id"], {"succeeded", "failed", "cancelled", "timeout"}, timeout_s=600)
        events = history(client, job["id"])
        attempts = client.get(f"/v1/jobs/{job['id']}/attempts", headers=auth("alice")).json()
        epochs = client.get(f"/v1/jobs/{job['id']}/metrics", headers=auth("alice")).json()["epochs"]

    assert done["state"] == "succeeded" and done["restarts"] == 1, done
    requeued = [e for e in events if e.state == "requeued"]
    assert [e.reason for e in requeued] == [f"node {victim} failed; requeued by Slurm (restart 1)"], events
    states: list[str] = [e.state for e in events]
    assert states[states.index("requeued") - 1] == "running" and states[-2:] == ["running", "succeeded"], states
    # Slurm's record, run by run, and the gateway's copy of it
    runs = sacct_runs(slurm_id)
    assert [r[0] for r in runs] == ["NODE_FAIL", "COMPLETED"], runs
    assert [(a["number"], a["slurm_state"]) for a in attempts] == [(0, "NODE_FAIL"), (1, "COMPLETED")]
    first, second = (expand_hostlist(a["node_list"]) for a in attempts)
    assert victim in first and victim not in second, attempts
    # The metrics of both runs: every epoch once, the second run resuming right after the last checkpoint
    assert [e["epoch"] for e in epochs] == list(range(1, 13)), epochs
    restarts = [e["restart"] for e in epochs]
    resumed_at = restarts.index(1)
    assert resumed_at >= 2 and set(restarts[:resumed_at]) == {0} and set(restarts[resumed_at:]) == {1}, restarts


@pytest.mark.faults  # one slurmd killed while a 2-node job runs
def test_a_job_slurm_does_not_requeue_fails_naming_the_node(
    on_three_nodes: ClusterSpec, tmp_path: Path, dataset_hash: str
) -> None:
    app = create_app(gateway_config(tmp_path))
    with TestClient(app) as client:
        client.post("/v1/algorithms", json={**SLEEPER, "team": "team-a"}, headers=auth("admin"))
        body = sleeper_job(dataset_hash, nodes=2, requeue=False)
        job = client.post("/v1/jobs", json=body, headers=auth("alice")).json()
        wait_for(client, job["id"], {"launching", "running"})
        slurm_id = client.get(f"/v1/jobs/{job['id']}", headers=auth("alice")).json()["slurm_job_id"]
        victim = expand_hostlist(sacct_runs(slurm_id)[-1][1])[-1]
        frozen = freeze_node(on_three_nodes, victim)
        try:
            done = wait_for(
                client, job["id"], {"succeeded", "failed", "cancelled", "timeout", "requeued"}, timeout_s=180
            )
        finally:
            kill_all(frozen)
    assert done["state"] == "failed" and done["restarts"] == 0, done
    assert done["reason"] == f"node {victim} failed; Slurm did not requeue the job"
    assert [r[0] for r in sacct_runs(slurm_id)] == ["NODE_FAIL"]


def test_scontrol_requeue_is_followed_to_the_end(cluster: ClusterSpec, tmp_path: Path, dataset_hash: str) -> None:
    app = create_app(gateway_config(tmp_path))
    with TestClient(app) as client:
        client.post("/v1/algorithms", json={**CLASSIFIER, "team": "team-a"}, headers=auth("admin"))
        body = classifier_job(dataset_hash, nodes=1, tasks_per_node=2, parameters={**LONG, "EPOCHS": 8})
        job = client.post("/v1/jobs", json=body, headers=auth("alice")).json()
        wait_epochs(client, job["id"], 2)
        slurm_id = client.get(f"/v1/jobs/{job['id']}", headers=auth("alice")).json()["slurm_job_id"]
        subprocess.run(["scontrol", "requeue", slurm_id], check=True)
        wait_for(client, job["id"], {"requeued"}, timeout_s=120)
        done = wait_for(client, job["id"], {"succeeded", "failed", "cancelled", "timeout"}, timeout_s=300)
        events = history(client, job["id"])
        epochs = client.get(f"/v1/jobs/{job['id']}/metrics", headers=auth("alice")).json()["epochs"]
    assert done["state"] == "succeeded" and done["restarts"] == 1, done
    reasons = [e.reason or "" for e in events if e.state == "requeued"]
    assert len(reasons) == 1 and reasons[0].startswith("requeued (scontrol requeue"), events
    assert [r[0] for r in sacct_runs(slurm_id)] == ["REQUEUED", "COMPLETED"]
    assert [e["epoch"] for e in epochs] == list(range(1, 9)) and epochs[-1]["restart"] == 1


def test_sigterm_stops_dispatching_at_once_and_leaves_nothing_half_done(
    cluster: ClusterSpec, tmp_path: Path, dataset_hash: str
) -> None:
    write_config(tmp_path / "gateway.toml", tmp_path, max_running_jobs=100, max_queued_jobs=200)
    log = open(tmp_path / "gateway.log", "ab")  # a file: an unread pipe fills up and blocks the gateway
    cmd = [HPCGW, "serve", "--config", str(tmp_path / "gateway.toml"), "--port", "18932"]
    # The real sbatch behind a busy slurmctld's 0.3 s answer, so that a backlog exists when SIGTERM comes
    # (an idle local slurmctld answers faster than the jobs can be posted).
    proc = serve(cmd, log, path_prefix=slow_submission(tmp_path / "bin", delay_s=0.3))
    base = "http://127.0.0.1:18932"
    try:
        wait_healthy(base)
        nap = [sys.executable, "-c", "import time; time.sleep(30)"]
        quick = {**QUICK, "command": in_image(nap), "local_command": nap, "team": "team-a"}
        httpx.post(f"{base}/v1/algorithms", json=quick, headers=auth("admin")).raise_for_status()
        for i in range(40):  # 40 shapes (time limits): 40 sbatch calls, one at a time, not one coalesced array
            body = sleeper_job(dataset_hash, algorithm="quick", time_limit_min=5 + i)
            httpx.post(f"{base}/v1/jobs", json=body, headers=auth("alice"))
        deadline = time.monotonic() + 60
        while not httpx.get(f"{base}/v1/jobs?state=queued&limit=1", headers=auth("alice")).json()["items"]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        stopped_at = time.time()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    assert code in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has shut down cleanly
    assert "Application shutdown complete" in (tmp_path / "gateway.log").read_text()
    with Session(create_engine(f"sqlite:///{tmp_path}/gw.db")) as session:
        jobs = list(session.exec(select(Job).order_by(col(Job.submit_time))))
    dispatched = [j for j in jobs if j.slurm_job_id]
    late = [j.id for j in dispatched if j.slurm_submit_time and utc(j.slurm_submit_time) > stopped_at + 1]
    half = [j.id for j in jobs if j.dispatching and not j.slurm_job_id]
    assert late == [] and half == [], (late, half)
    assert 0 < len(dispatched) < len(jobs), f"{len(dispatched)} of {len(jobs)} reached Slurm before SIGTERM"
    # Every job Slurm has from this gateway is one the database knows, under the same id.
    out = subprocess.run(
        ["squeue", "-h", "-o", "%i|%k"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    ours = {j.id: j.slurm_job_id for j in jobs}
    in_slurm = {line.split("|")[1].removeprefix("hpcgw:"): line.split("|")[0] for line in out if "|hpcgw:" in line}
    for comment, slurm_id in in_slurm.items():  # a job's own comment, or its coalesced array's
        if comment.startswith("batch:"):
            master, members = slurm_id.partition("_")[0], [j for j in jobs if j.batch_id == comment[6:]]
            assert members and all((j.slurm_job_id or "").startswith(f"{master}_") for j in members), (comment, ours)
        else:
            assert ours.get(comment) == slurm_id, (in_slurm, ours)


def slow_submission(folder: Path, delay_s: float) -> Path:
    """sudo (the gateway submits through it, as the job's user) and sbatch, each answering ``delay_s`` late."""
    folder.mkdir()
    for command in ("sudo", "sbatch"):
        real = shutil.which(command)
        assert real is not None, command
        script = folder / command
        script.write_text(f'#!/bin/sh\nsleep {delay_s}\nexec {shlex.quote(real)} "$@"\n')
        script.chmod(0o755)
    folder.chmod(0o755)
    return folder
