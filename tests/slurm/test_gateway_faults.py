"""On Slurm: the gateway's worker under the faults a cluster really has (a crash between sbatch and the
database, an unreachable controller, accounting down), and its cost in Slurm calls per cycle."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import cast

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from bench.support import HPCGW
from devcluster.spec import ClusterSpec
from gateway.app import create_app
from gateway.client import wait_healthy
from gateway.worker.loop import Worker
from tests.gateway.conftest import auth
from tests.slurm.support import (
    CLASSIFIER,
    QUICK,
    SLEEPER,
    accounted,
    classifier_job,
    gateway_config,
    history,
    serve,
    sleeper_job,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.slurm


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
    worker: Worker = cast(FastAPI, gateway.app).state.worker

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
    cluster: ClusterSpec, tmp_path: Path, dataset_hash: str
) -> None:
    config_file = tmp_path / "gateway.toml"
    write_config(config_file, tmp_path)
    # The worker, with its dispatcher's "record the Slurm id" step replaced by a hard exit: it dies after sbatch
    # (and submitit's bookkeeping) and before the database update. The patch lives in this test's worker process
    # only; production code has no hook for it. The API runs beside it, without a worker of its own.
    crashing = (
        "import os, sys\n"
        "import gateway.worker.dispatch as dispatch\n"
        "dispatch.link = lambda *args, **kwargs: os._exit(97)\n"
        "from gateway.cli.main import app\n"
        "sys.exit(app(sys.argv[1:], prog_name='hpcgw'))\n"
    )
    log = open(tmp_path / "gateway.log", "ab")  # a file: an unread pipe fills up and blocks the gateway
    api = serve([HPCGW, "serve", "--config", str(config_file), "--port", "18931", "--no-worker"], log)
    base = "http://127.0.0.1:18931"
    first: subprocess.Popen[bytes] | None = None
    try:
        _wait_http(base)
        first = serve([sys.executable, "-c", crashing, "worker", "--config", str(config_file)], log)
        httpx.post(
            f"{base}/v1/algorithms",
            json={
                **SLEEPER,
                "command": ["python", "-c", "print('hi')"],
                "local_command": [sys.executable, "-c", "print('hi')"],
                "team": "team-a",
            },
            headers=auth("admin"),  # only an admin registers a local command
        )
        job = httpx.post(f"{base}/v1/jobs", json=sleeper_job(dataset_hash), headers=auth("alice")).json()
        assert first.wait(timeout=60) == 97  # died right after sbatch, before recording the Slurm id
    finally:
        if first is not None and first.poll() is None:
            first.send_signal(signal.SIGKILL)
        api.terminate()
        api.wait(timeout=30)
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
    second = serve([HPCGW, "serve", "--config", str(config_file), "--port", "18931"], log)
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
    ours = accounted(job["id"])
    assert len(ours) == 1 and ours[0].split("|")[0] == state["slurm_job_id"]


def _conf_with(tmp_path: Path, key: str, value: str) -> str:
    """A copy of the cluster's slurm.conf with one setting changed: a real Slurm that cannot be reached."""
    source = Path(os.environ["SLURM_CONF"]).read_text().splitlines()
    path = tmp_path / f"slurm-{key}.conf"
    path.write_text("\n".join(f"{key}={value}" if line.startswith(f"{key}=") else line for line in source) + "\n")
    return str(path)


def test_unreachable_slurm_keeps_the_job_accepted_until_it_answers(
    cluster: ClusterSpec, tmp_path: Path, dataset_hash: str, monkeypatch: pytest.MonkeyPatch
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
    assert accounted(job["id"]) == [f"{done['slurm_job_id']}|hpcgw:{job['id']}"]


def test_without_accounting_the_tracker_falls_back_to_scontrol(
    cluster: ClusterSpec, tmp_path: Path, dataset_hash: str, monkeypatch: pytest.MonkeyPatch
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
