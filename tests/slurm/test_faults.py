"""The fault-injection suite, on the real cluster: what a cluster really does to a gateway, kept true by CI.

- the gateway SIGKILLed 10 times in a burst of 300 submissions;
- slurmctld stopped for 60 s during submissions;
- slurmdbd stopped for 60 s while jobs run;
- the database's disk full, and PostgreSQL restarted, during submissions;
- (one slurmd killed in a 2-node job: tests/slurm/test_state_truth.py, also marked ``faults``).

Each assertion message carries the scenario's counts. Run the suite alone with ``pytest -m faults``.
"""

from __future__ import annotations

import random
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from bench.support import HPCGW, slurm_copies
from devcluster import ClusterSpec, cluster_up
from devcluster.cluster import daemons
from gateway.app import create_app
from gateway.client import wait_healthy
from gateway.store.db import make_engine
from tests.gateway.conftest import REPO, auth, postgres_url  # noqa: F401  (the fixture)
from tests.slurm.support import (
    ENDED,
    NO_RATE_LIMIT,
    QUICK,
    gateway_config,
    history,
    python_algorithm,
    quick_job,
    roomy_accounts,
    serve,
    sleeper_job,
    submit_until_answered,
    wait_all_ended,
    wait_for,
    write_config,
)

pytestmark = [pytest.mark.slurm, pytest.mark.faults]

NAPPER = python_algorithm("napper", "-c", "import os, time; time.sleep(float(os.environ['NAP_S']))")


class Gateway:
    """``hpcgw serve`` as its own user, restarted by the test as often as it kills it."""

    def __init__(self, config: Path, port: int, log: Any) -> None:
        self.config, self.port, self.log = config, port, log
        self.base = f"http://127.0.0.1:{port}"
        self.proc = self.start()

    def start(self) -> subprocess.Popen[bytes]:
        proc = serve([HPCGW, "serve", "--config", str(self.config), "--port", str(self.port)], self.log)
        wait_healthy(self.base, alive=lambda: proc.poll() is None)
        return proc

    def kill_and_restart(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=30)
        self.proc = self.start()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=60)


def test_ten_sigkills_in_a_burst_of_300_lose_and_duplicate_nothing(
    cluster: ClusterSpec, tmp_path: Path, dataset_hash: str
) -> None:
    config = write_config(
        tmp_path / "gateway.toml", tmp_path, max_running_jobs=300, max_queued_jobs=400, rate_limits=NO_RATE_LIMIT
    )
    keys = [f"burst-{i:03d}" for i in range(300)]
    rng = random.Random(20261123)
    began = datetime.now(UTC)
    with roomy_accounts(config), open(tmp_path / "gateway.log", "ab") as log:
        gateway = Gateway(config, 18961, log)
        try:
            registered = httpx.post(
                f"{gateway.base}/v1/algorithms", json={**QUICK, "team": "team-a"}, headers=auth("admin")
            )
            assert registered.status_code == 201, registered.text
            deadline = time.monotonic() + 600
            kills = 0
            with ThreadPoolExecutor(6) as pool:
                futures = {
                    key: pool.submit(submit_until_answered, gateway.base, quick_job(dataset_hash, key), deadline)
                    for key in keys
                }
                while kills < 10:  # at random moments: while the requests come, and while the worker dispatches
                    time.sleep(rng.uniform(0.3, 2.5))
                    gateway.kill_and_restart()
                    kills += 1
                answers = {key: future.result() for key, future in futures.items()}
            again = {key: submit_until_answered(gateway.base, quick_job(dataset_hash, key), deadline) for key in keys}
            ids = {job_id for _, job_id in answers.values()}
            listed = httpx.get(f"{gateway.base}/v1/jobs?limit=1000", headers=auth("alice")).json()
            states = wait_all_ended(gateway.base, sorted(ids), timeout_s=900)
        finally:
            gateway.stop()
    counts = Counter(states.values())
    in_slurm = slurm_copies(make_engine(f"sqlite:///{tmp_path}/gw.db"), ids, began)
    summary = (
        f"{kills} kills; {len(answers)} keys answered with {len(ids)} jobs (201: "
        f"{sum(s == 201 for s, _ in answers.values())}, "
        f"200 after a kill: {sum(s == 200 for s, _ in answers.values())}); "
        f"{listed['total']} jobs stored; states {dict(counts)}; in sacct: {len(in_slurm)} jobs, "
        f"{sum(n > 1 for n in in_slurm.values())} more than once"
    )
    assert kills == 10, summary
    assert len(ids) == 300 and listed["total"] == 300, summary
    assert all(again[key] == (200, answers[key][1]) for key in keys), summary  # every key: one job, for good
    assert counts == Counter({"succeeded": 300}), summary
    assert set(in_slurm) == ids and set(in_slurm.values()) == {1}, summary  # no unclaimed array element either


# --- 2. and 3. slurmctld, then slurmdbd, stopped for 60 s ---------------------------------------------------


@contextmanager
def stopped(cluster: ClusterSpec, name: str, seconds: float) -> Iterator[float]:
    """The daemon ``name`` stopped for at least ``seconds`` (the body runs during the outage), then back."""
    daemon = next(d for d in daemons(cluster) if d.name == name)
    assert daemon.stop(), f"{name} was not running"
    down_at = time.monotonic()
    try:
        yield down_at
        time.sleep(max(0.0, down_at + seconds - time.monotonic()))
    finally:
        assert cluster_up(cluster).healthy, f"{name} did not come back"


def test_slurmctld_stopped_for_60s_during_submissions(cluster: ClusterSpec, tmp_path: Path, dataset_hash: str) -> None:
    limits: dict[str, Any] = {"team-a": {"max_running_jobs": 4, "max_queued_jobs": 100}}
    app = create_app(gateway_config(tmp_path, **limits))
    began = datetime.now(UTC)
    with TestClient(app) as client:
        client.post("/v1/algorithms", json={**QUICK, "team": "team-a"}, headers=auth("admin"))
        jobs = [client.post("/v1/jobs", json=quick_job(dataset_hash), headers=auth("alice")) for _ in range(5)]
        # Those sent before the outage have ended before it begins: a job whose srun starts while slurmctld is
        # down fails in Slurm itself ("srun: Unable to confirm allocation"), whatever the gateway does.
        for j in jobs:
            wait_for(client, j.json()["id"], ENDED, timeout_s=120)
        reachable: list[bool] = []
        with stopped(cluster, "slurmctld", 60):
            for _ in range(15):  # spread over the outage
                jobs.append(client.post("/v1/jobs", json=quick_job(dataset_hash), headers=auth("alice")))
                reachable.append(client.get("/healthz").json()["slurm_reachable"])
                time.sleep(2)
            during = {
                j.json()["id"]: client.get(f"/v1/jobs/{j.json()['id']}", headers=auth("alice")).json() for j in jobs[5:]
            }
        ids = [j.json()["id"] for j in jobs]
        done = {i: wait_for(client, i, ENDED, timeout_s=300)["state"] for i in ids}
    in_slurm = slurm_copies(app.state.engine, set(ids), began)
    summary = (
        f"{len(jobs)} submissions, HTTP {dict(Counter(j.status_code for j in jobs))}; during the outage: states "
        f"{dict(Counter(j['state'] for j in during.values()))}, health said unreachable {reachable.count(False)} "
        f"times; after: {dict(Counter(done.values()))}; "
        f"in sacct {len(in_slurm)}, max {max(in_slurm.values(), default=0)}"
    )
    assert all(j.status_code == 201 for j in jobs), summary
    assert not any(j["state"] in ENDED for j in during.values()), summary  # nothing failed for want of Slurm
    assert False in reachable, summary
    assert set(done.values()) == {"succeeded"}, summary
    assert set(in_slurm) == set(ids) and set(in_slurm.values()) == {1}, summary


def test_slurmdbd_stopped_for_60s_while_jobs_run(cluster: ClusterSpec, tmp_path: Path, dataset_hash: str) -> None:
    limits: dict[str, Any] = {"team-a": {"max_running_jobs": 4, "max_queued_jobs": 100}}
    app = create_app(gateway_config(tmp_path, **limits))
    with TestClient(app) as client:
        client.post("/v1/algorithms", json={**NAPPER, "team": "team-a"}, headers=auth("admin"))
        body = sleeper_job(dataset_hash, algorithm="napper", parameters={"NAP_S": 20})
        ids = [client.post("/v1/jobs", json=body, headers=auth("alice")).json()["id"] for _ in range(4)]
        for job_id in ids:
            wait_for(client, job_id, {"launching"}, timeout_s=120)  # it sleeps: no trainer's start marker
        sources: list[str] = []
        with stopped(cluster, "slurmdbd", 60) as down_at:
            while time.monotonic() < down_at + 55:
                sources.append(client.get("/healthz").json()["tracking_source"])
                time.sleep(1)
            during = {i: client.get(f"/v1/jobs/{i}", headers=auth("alice")).json()["state"] for i in ids}
        done = {i: wait_for(client, i, ENDED, timeout_s=120)["state"] for i in ids}
        states = {i: [e.state for e in history(client, i)] for i in ids}
        sacct_states = {i: _sacct_state(client.get(f"/v1/jobs/{i}", headers=auth("alice")).json()) for i in ids}
    summary = (
        f"tracking sources during the outage {dict(Counter(sources))}; "
        f"states at its end {dict(Counter(during.values()))}; "
        f"after: {dict(Counter(done.values()))}; sacct after: {dict(Counter(sacct_states.values()))}"
    )
    assert "scontrol" in sources, summary  # tracked through slurmctld while accounting was down
    assert set(during.values()) == {"succeeded"}, summary  # the jobs ended during the outage, and it saw them end
    assert set(done.values()) == {"succeeded"}, summary
    for job_id, seen in states.items():
        assert seen == ["accepted", "queued", "launching", "succeeded"], (job_id, seen, summary)
    assert set(sacct_states.values()) == {"COMPLETED"}, summary  # accounting caught up with what it missed


def _sacct_state(job: dict[str, Any], timeout_s: float = 120) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        out = subprocess.run(
            ["sacct", "-X", "-n", "-P", "-j", job["slurm_job_id"], "-o", "State"], capture_output=True, text=True
        ).stdout.split()
        if (out and out[0] == "COMPLETED") or time.monotonic() > deadline:
            return out[0] if out else "missing"
        time.sleep(1)


# --- 4. the database: its disk full, or PostgreSQL restarted -----------------------------------------------


def _burst(client: TestClient, dataset_hash: str, keys: list[str]) -> dict[str, httpx.Response]:
    return {key: client.post("/v1/jobs", json=quick_job(dataset_hash, key), headers=auth("alice")) for key in keys}


def _check_refusals(answers: dict[str, httpx.Response]) -> list[str]:
    """Every refusal is a 503 in the one error shape, with Retry-After; returns the refused keys."""
    refused = [key for key, r in answers.items() if r.status_code != 201]
    for key in refused:
        response = answers[key]
        assert response.status_code == 503, (key, response.status_code, response.text)
        assert int(response.headers["Retry-After"]) >= 1 and "database" in response.json()["detail"], response.text
    return refused


def _recovered_and_ran(
    client: TestClient, dataset_hash: str, answers: dict[str, httpx.Response], began: datetime
) -> str:
    """The refused keys were not written; sent again, each makes one job; all jobs run once. Returns a summary."""
    refused = _check_refusals(answers)
    stored = {j["idempotency_key"] for j in client.get("/v1/jobs?limit=1000", headers=auth("alice")).json()["items"]}
    half_written = [key for key in refused if key in stored]
    deadline = time.monotonic() + 60
    retried = _burst(client, dataset_hash, refused)
    while (waiting := [k for k, r in retried.items() if r.status_code == 503]) and time.monotonic() < deadline:
        time.sleep(1)  # the gateway recovers by itself: no restart, the same app
        retried |= _burst(client, dataset_hash, waiting)
    assert all(r.status_code == 201 for r in retried.values()), (
        sorted(Counter(r.status_code for r in retried.values()).items()),
        half_written,
    )
    ids = {(answers[k] if k not in retried else retried[k]).json()["id"] for k in answers}
    done = {i: wait_for(client, i, ENDED, timeout_s=300)["state"] for i in ids}
    in_slurm = slurm_copies(cast(FastAPI, client.app).state.engine, ids, began)
    summary = (
        f"{len(answers)} submissions: {len(answers) - len(refused)} accepted, {len(refused)} refused with 503 "
        f"({len(half_written)} of them stored anyway); "
        f"sent again: HTTP {dict(Counter(r.status_code for r in retried.values()))}; "
        f"jobs {len(ids)}, {dict(Counter(done.values()))}; "
        f"in sacct {len(in_slurm)}, max {max(in_slurm.values(), default=0)}"
    )
    assert refused and not half_written, summary
    assert all(r.status_code == 201 for r in retried.values()), summary
    assert len(ids) == len(answers) and set(done.values()) == {"succeeded"}, summary
    assert set(in_slurm) == ids and set(in_slurm.values()) == {1}, summary
    return summary


def test_a_full_disk_under_the_database_answers_503_and_the_gateway_recovers(
    cluster: ClusterSpec, tmp_path: Path, dataset_hash: str
) -> None:
    disk = tmp_path / "dbdisk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(disk)], check=True)
    try:
        limits: dict[str, Any] = {"team-a": {"max_running_jobs": 4, "max_queued_jobs": 100}}
        config = gateway_config(tmp_path, **limits)
        config = config.model_copy(update={"database_url": f"sqlite:///{disk}/gw.db"})
        app = create_app(config)
        began = datetime.now(UTC)
        with TestClient(app, raise_server_exceptions=False) as client:
            client.post("/v1/algorithms", json={**QUICK, "team": "team-a"}, headers=auth("admin"))
            answers = _burst(client, dataset_hash, [f"before-{i}" for i in range(3)])
            filler = disk / "filler"
            with open(filler, "wb") as fh:
                try:
                    while True:
                        fh.write(b"\0" * 65536)
                        fh.flush()
                except OSError:
                    pass  # the disk is full
            answers |= _burst(client, dataset_hash, [f"full-{i}" for i in range(10)])
            filler.unlink()  # an operator clears the disk
            summary = _recovered_and_ran(client, dataset_hash, answers, began)
        engine = create_engine(config.database_url)
        with engine.connect() as connection:
            integrity = connection.execute(text("PRAGMA integrity_check")).scalar()
        engine.dispose()
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
    print(summary)
    assert integrity == "ok", summary


def test_a_postgresql_restart_answers_503_and_the_gateway_recovers(
    cluster: ClusterSpec, tmp_path: Path, dataset_hash: str, postgres_database: str
) -> None:
    limits: dict[str, Any] = {"team-a": {"max_running_jobs": 4, "max_queued_jobs": 100}}
    config = gateway_config(tmp_path, **limits)
    app = create_app(config.model_copy(update={"database_url": postgres_database}))
    script = ["bash", str(REPO / "scripts" / "postgres-dev.sh")]
    state = str(REPO / ".hpcgw" / "postgres")
    began = datetime.now(UTC)
    with TestClient(app, raise_server_exceptions=False) as client:
        client.post("/v1/algorithms", json={**QUICK, "team": "team-a"}, headers=auth("admin"))
        answers = _burst(client, dataset_hash, [f"before-{i}" for i in range(3)])
        subprocess.run([*script, "down", state], check=True, capture_output=True)
        try:
            answers |= _burst(client, dataset_hash, [f"down-{i}" for i in range(10)])
        finally:
            subprocess.run([*script, "up", state], check=True, capture_output=True)
        summary = _recovered_and_ran(client, dataset_hash, answers, began)
    print(summary)
