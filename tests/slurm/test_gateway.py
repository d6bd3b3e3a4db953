"""On Slurm: the gateway, with its real worker, in front of the real local cluster."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, col, select

from examples.intent_classifier import TRAINER_DIR, ensure_dataset
from gateway.app import create_app
from gateway.client import wait_healthy
from gateway.models import Job, JobEvent
from tests.gateway.conftest import auth, make_config

pytestmark = pytest.mark.slurm
DATA = Path(__file__).parent.parent / "data"
HPCGW = str(Path(sys.executable).with_name("hpcgw"))
CLASSIFIER = {
    "name": "intent-classifier",
    "version": "1.0",
    "image": "/images/intent-classifier.sif",
    "command": ["python", "/opt/intent-classifier/train.py"],
    "local_command": [sys.executable, str(TRAINER_DIR / "train.py")],
}
SLEEPER = {
    "name": "sleeper",
    "version": "1",
    "image": "/images/sleeper.sif",
    "command": ["sleep", "600"],
    "local_command": [sys.executable, "-c", "import time; time.sleep(600)"],
}
QUICK = {
    "name": "quick",
    "version": "1",
    "image": "/images/quick.sif",
    "command": ["true"],
    "local_command": [sys.executable, "-c", "print('quick trainer done')"],
}
ENV_PRINTER = {
    "name": "env-printer",
    "version": "1",
    "image": "/images/env.sif",
    "command": ["python", "p.py"],
    "local_command": [sys.executable, str(DATA / "print_env.py"), "A,B,C,D,JOB_ID,SEED"],
}


def gateway_config(tmp_path: Path, **teams: dict) -> object:
    config = make_config(tmp_path, f"sqlite:///{tmp_path}/gw.db", poll={"interval_s": 2.0, "floor_s": 0.2})
    for name, limits in teams.items():
        config.teams[name] = config.teams[name].model_copy(update=limits)
    return config


@pytest.fixture
def dataset_hash(tmp_path: Path) -> str:
    staging = tmp_path / "staging"
    digest = ensure_dataset(staging)
    target = tmp_path / "datasets" / "intents" / digest
    target.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(target)
    return digest


@pytest.fixture
def gateway(cluster, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[TestClient]:
    limits = getattr(request, "param", {})
    app = create_app(gateway_config(tmp_path, **limits))
    with TestClient(app) as client:
        for algorithm in (CLASSIFIER, SLEEPER, ENV_PRINTER, QUICK):
            response = client.post("/v1/algorithms", json={**algorithm, "team": "team-a"}, headers=auth("admin"))
            assert response.status_code == 201, response.text
        yield client
        # A failed test must not leave jobs behind that hold the nodes for the next one.
        with Session(client.app.state.engine) as session:
            leftover = [j.slurm_job_id for j in session.exec(select(Job)) if j.slurm_job_id and j.end_time is None]
        if leftover:
            subprocess.run(["scancel", *leftover], check=False)


def classifier_job(dataset_hash: str, **overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "name": "classifier",
        "algorithm": "intent-classifier",
        "dataset_id": "intents",
        "train_data_version_hash": dataset_hash,
        "nodes": 2,
        "tasks_per_node": 2,
        "time_limit_min": 15,
        "parameters": {"SEED": 7, "EPOCHS": 3, "LR": 0.3, "BATCH_SIZE": 32, "FC_SIZE": 64},
    }
    return body | overrides


def sleeper_job(dataset_hash: str, **overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "name": "sleeper",
        "algorithm": "sleeper",
        "dataset_id": "intents",
        "train_data_version_hash": dataset_hash,
        "time_limit_min": 10,
    }
    return body | overrides


def wait_for(client: TestClient, job_id: str, states: set[str], user: str = "alice", timeout_s: float = 300) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        job = client.get(f"/v1/jobs/{job_id}", headers=auth(user)).json()
        if job["state"] in states:
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job['state']}: {job}"
        time.sleep(0.2)


def history(client: TestClient, job_id: str) -> list[JobEvent]:
    with Session(client.app.state.engine) as session:
        return list(session.exec(select(JobEvent).where(JobEvent.job_id == job_id).order_by(col(JobEvent.id))))


def sacct_row(slurm_job_id: str, fields: str = "State,Partition,NNodes,ExitCode") -> list[str]:
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-j", slurm_job_id, "-o", fields], capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0].split("|")


def test_a_job_goes_through_every_state_and_reports_metrics(gateway: TestClient, dataset_hash: str) -> None:
    job = gateway.post("/v1/jobs", json=classifier_job(dataset_hash), headers=auth("alice")).json()
    done = wait_for(gateway, job["id"], {"succeeded", "failed", "cancelled", "timeout"})
    assert done["state"] == "succeeded", done
    states = [e.state for e in history(gateway, job["id"])]
    assert states == ["accepted", "queued", "launching", "running", "succeeded"]
    assert done["exit_code"] == 0 and done["restarts"] == 0 and done["slurm_state"] == "COMPLETED"
    assert done["start_time"] and done["end_time"]
    assert sacct_row(done["slurm_job_id"]) == ["COMPLETED", "team-a", "2", "0:0"]
    epochs = gateway.get(f"/v1/jobs/{job['id']}/metrics", headers=auth("alice")).json()["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2, 3] and epochs[-1]["accuracy"] > epochs[0]["accuracy"]
    logs = gateway.get(f"/v1/jobs/{job['id']}/logs?rank=0&lines=50", headers=auth("alice")).json()
    assert any("epoch 3/3" in line for line in logs[0]["lines"])
    # rerun: the same recorded inputs give the same metrics (the trainer is deterministic)
    again = gateway.post(f"/v1/jobs/{job['id']}/rerun", headers=auth("alice")).json()
    assert wait_for(gateway, again["id"], {"succeeded", "failed"})["state"] == "succeeded"
    rerun_epochs = gateway.get(f"/v1/jobs/{again['id']}/metrics", headers=auth("alice")).json()["epochs"]
    strip = lambda ms: [{k: v for k, v in m.items() if k != "samples_per_s"} for m in ms]  # noqa: E731
    assert strip(rerun_epochs) == strip(epochs)


def test_cancel_reaches_slurm(gateway: TestClient, dataset_hash: str) -> None:
    job = gateway.post("/v1/jobs", json=sleeper_job(dataset_hash), headers=auth("alice")).json()
    # The sleeper never initialises Horovod, so it stays `launching` (no start marker): Slurm runs it all the same.
    wait_for(gateway, job["id"], {"launching", "running"})
    assert gateway.post(f"/v1/jobs/{job['id']}/cancel", headers=auth("alice")).status_code == 200
    done = wait_for(gateway, job["id"], {"cancelled", "failed", "succeeded"})
    assert done["state"] == "cancelled"
    assert sacct_row(done["slurm_job_id"], "State")[0].startswith("CANCELLED")


def test_parameters_with_shell_syntax_reach_the_trainer_literally(
    gateway: TestClient, dataset_hash: str, tmp_path: Path
) -> None:
    values = {
        "A": f"$(touch {tmp_path}/pwned)",
        "B": f"`touch {tmp_path}/pwned`",
        "C": "x; touch pwned",
        "D": "a\n#SBATCH --nodes=99\nb",
        "REPORT_FILE": str(tmp_path / "env.json"),
        "SEED": "5",
    }
    body = sleeper_job(dataset_hash, algorithm="env-printer", parameters=values)
    job = gateway.post("/v1/jobs", json=body, headers=auth("alice")).json()
    done = wait_for(gateway, job["id"], {"succeeded", "failed"})
    assert done["state"] == "succeeded", done
    seen = json.loads((tmp_path / "env.json.0").read_text())
    assert seen == {
        "A": values["A"],
        "B": values["B"],
        "C": values["C"],
        "D": values["D"],
        "JOB_ID": job["id"],
        "SEED": "5",
    }
    assert not list(tmp_path.glob("pwned*"))
    assert sacct_row(done["slurm_job_id"], "NNodes") == ["1"]


@pytest.mark.parametrize("gateway", [{"team-b": {"max_running_jobs": 1}}], indirect=True)
def test_over_quota_waits_in_accepted_then_runs(gateway: TestClient, dataset_hash: str) -> None:
    first = gateway.post(
        "/v1/jobs", json=classifier_job(dataset_hash, nodes=1, tasks_per_node=1), headers=auth("bob")
    ).json()
    second = gateway.post(
        "/v1/jobs", json=classifier_job(dataset_hash, nodes=1, tasks_per_node=1), headers=auth("bob")
    ).json()
    wait_for(gateway, first["id"], {"running"}, user="bob")
    assert gateway.get(f"/v1/jobs/{second['id']}", headers=auth("bob")).json()["state"] == "accepted"
    done_first = wait_for(gateway, first["id"], {"succeeded"}, user="bob")
    done_second = wait_for(gateway, second["id"], {"succeeded"}, user="bob")
    queued_at = next(e.at for e in history(gateway, second["id"]) if e.state == "queued")
    assert queued_at.isoformat() >= done_first["end_time"].replace("Z", "")[:19]
    assert done_second["start_time"] >= done_first["end_time"]


@pytest.mark.parametrize("gateway", [{"team-a": {"max_running_jobs": 1}}], indirect=True)
def test_a_teams_backlog_does_not_delay_another_team(gateway: TestClient, dataset_hash: str) -> None:
    long_run = {"SEED": 7, "EPOCHS": 6, "LR": 0.3, "BATCH_SIZE": 32, "FC_SIZE": 64}
    backlog = [
        gateway.post(
            "/v1/jobs",
            json=classifier_job(dataset_hash, nodes=1, tasks_per_node=2, parameters=long_run),
            headers=auth("alice"),
        ).json()
        for _ in range(3)
    ]
    wait_for(gateway, backlog[0]["id"], {"launching", "running"})
    states_a = [gateway.get(f"/v1/jobs/{j['id']}", headers=auth("alice")).json()["state"] for j in backlog[1:]]
    assert states_a == ["accepted", "accepted"]  # team-a's backlog waits in the gateway, not in Slurm
    other = gateway.post(
        "/v1/jobs", json=classifier_job(dataset_hash, nodes=1, tasks_per_node=2), headers=auth("bob")
    ).json()
    done_b = wait_for(gateway, other["id"], {"succeeded"}, user="bob")
    done_a = [wait_for(gateway, job["id"], {"succeeded"}) for job in backlog]
    # team-b's job ran beside team-a's first job, before team-a's queued ones started
    assert done_b["start_time"] < done_a[1]["start_time"] < done_a[2]["start_time"]
    assert done_b["start_time"] < done_a[0]["end_time"]


@pytest.mark.parametrize("gateway", [{"team-a": {"max_running_jobs": 60, "max_queued_jobs": 100}}], indirect=True)
def test_one_sacct_per_cycle_for_1_or_50_jobs(
    gateway: TestClient, dataset_hash: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrappers, log = tmp_path / "bin", tmp_path / "calls.log"
    wrappers.mkdir()
    for name in ("sacct", "squeue", "scontrol", "sbatch", "scancel", "sinfo"):
        real = subprocess.run(["which", name], capture_output=True, text=True, check=True).stdout.strip()
        script = wrappers / name
        script.write_text(f'#!/bin/sh\necho {name} >> "{log}"\nexec {real} "$@"\n')
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{wrappers}:{os.environ['PATH']}")
    worker = gateway.app.state.worker

    def quiet_point() -> int:
        """Return just after a poll cycle ended: the next one is at least the floor interval away."""
        seen = worker.stats.poll_cycles
        while worker.stats.poll_cycles == seen:
            time.sleep(0.005)
        return worker.stats.poll_cycles

    def measure(seconds: float) -> tuple[int, int, int]:
        first = quiet_point()
        log.write_text("")
        time.sleep(seconds)
        last = quiet_point()
        calls = log.read_text().split()
        return calls.count("sacct"), calls.count("squeue"), last - first

    jobs = [gateway.post("/v1/jobs", json=sleeper_job(dataset_hash), headers=auth("alice")).json()]
    wait_for(gateway, jobs[0]["id"], {"launching", "running"})
    sacct_1, squeue_1, cycles_1 = measure(6)
    jobs += [gateway.post("/v1/jobs", json=sleeper_job(dataset_hash), headers=auth("alice")).json() for _ in range(49)]
    for job in jobs:
        wait_for(gateway, job["id"], {"queued", "launching", "running"})
    sacct_50, squeue_50, cycles_50 = measure(6)
    for job in jobs:
        gateway.post(f"/v1/jobs/{job['id']}/cancel", headers=auth("alice"))
    for job in jobs:
        wait_for(gateway, job["id"], {"cancelled"})
    assert cycles_1 >= 2 and cycles_50 >= 2
    assert sacct_1 == cycles_1, (sacct_1, cycles_1)
    assert sacct_50 == cycles_50, (sacct_50, cycles_50)
    assert squeue_1 <= cycles_1 and squeue_50 <= cycles_50  # at most one squeue, for pending reasons


def test_crash_between_sbatch_and_the_database_leaves_exactly_one_job(
    cluster, tmp_path: Path, dataset_hash: str
) -> None:
    config_file = tmp_path / "gateway.toml"
    config_file.write_text(CRASH_CONFIG.format(root=tmp_path))
    env = {**os.environ, "HPCGW_TEST_CRASH_AFTER_SBATCH": "1"}
    log = open(tmp_path / "gateway.log", "ab")  # a file: an unread pipe fills up and blocks the gateway
    first = subprocess.Popen(
        [HPCGW, "serve", "--config", str(config_file), "--port", "18931"], env=env, stdout=log, stderr=log
    )
    base = "http://127.0.0.1:18931"
    try:
        _wait_http(base)
        httpx.post(
            f"{base}/v1/algorithms",
            json={**SLEEPER, "local_command": [sys.executable, "-c", "print('hi')"]},
            headers=auth("alice"),
        )
        job = httpx.post(f"{base}/v1/jobs", json=sleeper_job(dataset_hash), headers=auth("alice")).json()
        assert first.wait(timeout=60) == 97  # died right after sbatch, before recording the Slurm id
    finally:
        if first.poll() is None:
            first.send_signal(signal.SIGKILL)
    # The hard case: the orphaned job has already finished (gone from squeue's default view, maybe not yet in
    # sacct) by the time the gateway comes back.
    deadline = time.monotonic() + 60
    while (
        f"hpcgw:{job['id']}|COMPLETED"
        not in subprocess.run(
            ["squeue", "-h", "-t", "all", "-o", "%k|%T"], capture_output=True, text=True
        ).stdout.split()
    ):
        assert time.monotonic() < deadline, "the orphaned job did not finish"
        time.sleep(0.2)
    second = subprocess.Popen([HPCGW, "serve", "--config", str(config_file), "--port", "18931"], stdout=log, stderr=log)
    try:
        _wait_http(base)
        deadline = time.monotonic() + 120
        while True:
            state = httpx.get(f"{base}/v1/jobs/{job['id']}", headers=auth("alice")).json()
            if state["state"] == "succeeded":
                break
            assert time.monotonic() < deadline, state
            time.sleep(0.5)
    finally:
        second.terminate()
        second.wait(timeout=30)
        log.close()
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-S", "now-1hours", "-o", "JobIDRaw,Comment"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    ours = [line for line in out.splitlines() if line.endswith(f"|hpcgw:{job['id']}")]
    assert len(ours) == 1 and ours[0].split("|")[0] == state["slurm_job_id"]


def _conf_with(tmp_path: Path, key: str, value: str) -> str:
    """A copy of the cluster's slurm.conf with one setting changed: a real Slurm that cannot be reached."""
    source = Path(os.environ["SLURM_CONF"]).read_text().splitlines()
    path = tmp_path / f"slurm-{key}.conf"
    path.write_text("\n".join(f"{key}={value}" if line.startswith(f"{key}=") else line for line in source) + "\n")
    return str(path)


def test_unreachable_slurm_keeps_the_job_accepted_until_it_answers(
    cluster, tmp_path: Path, dataset_hash: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = os.environ["SLURM_CONF"]
    monkeypatch.setenv("SLURM_CONF", _conf_with(tmp_path, "SlurmctldPort", "16999"))  # nothing listens there
    app = create_app(gateway_config(tmp_path))
    with TestClient(app) as client:
        client.post("/v1/algorithms", json={**QUICK, "team": "team-a"}, headers=auth("admin"))
        job = client.post("/v1/jobs", json=sleeper_job(dataset_hash, algorithm="quick"), headers=auth("alice")).json()
        deadline = time.monotonic() + 60
        while app.state.worker.stats.slurm_reachable:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert client.get(f"/v1/jobs/{job['id']}", headers=auth("alice")).json()["state"] == "accepted"
        assert client.get("/healthz").json()["slurm_reachable"] is False
        monkeypatch.setenv("SLURM_CONF", good)  # the controller answers again
        done = wait_for(client, job["id"], {"succeeded", "failed"}, timeout_s=120)
    assert done["state"] == "succeeded"
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-S", "now-1hours", "-o", "JobIDRaw,Comment"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert [line for line in out.splitlines() if line.endswith(f"|hpcgw:{job['id']}")] == [
        f"{done['slurm_job_id']}|hpcgw:{job['id']}"
    ]


def test_without_accounting_the_tracker_falls_back_to_scontrol(
    cluster, tmp_path: Path, dataset_hash: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLURM_CONF", _conf_with(tmp_path, "AccountingStoragePort", "16998"))  # sacct fails
    app = create_app(gateway_config(tmp_path))
    with TestClient(app) as client:
        client.post("/v1/algorithms", json={**CLASSIFIER, "team": "team-a"}, headers=auth("admin"))
        body = classifier_job(
            dataset_hash,
            nodes=1,
            tasks_per_node=2,
            parameters={"SEED": 7, "EPOCHS": 2, "LR": 0.3, "BATCH_SIZE": 32, "FC_SIZE": 64},
        )
        job = client.post("/v1/jobs", json=body, headers=auth("alice")).json()
        done = wait_for(client, job["id"], {"succeeded", "failed"}, timeout_s=180)
        health = client.get("/healthz").json()
    assert done["state"] == "succeeded" and done["exit_code"] == 0
    assert [e.state for e in history(client, job["id"])][-2:] == ["running", "succeeded"]
    assert health["tracking_source"] == "scontrol"
    assert health["accounting"].startswith("unavailable")


def _wait_http(base: str) -> None:
    wait_healthy(base)


CRASH_CONFIG = """
dev_mode = true
database_url = "sqlite:///{root}/crash.db"
dataset_root = "{root}/datasets"
job_root = "{root}/jobs"
container_runtime = "none"
[poll]
interval_s = 1.0
floor_s = 0.2
[teams.team-a]
partitions = ["team-a"]
account = "team-a"
max_nodes = 2
max_running_jobs = 4
[[tokens]]
user = "alice"
team = "team-a"
token = "team-a-dev-token"
"""
