"""Coalesced dispatch and the elected worker, on the real cluster: fifty same-shape jobs (POSTed one by one, and
in one batch request) are one Slurm array whose elements each keep their own state, exit code, log and metrics;
other shapes and users go out apart; and with two gateways and standby workers on PostgreSQL, SIGKILLs of the
active worker in a burst lose and duplicate nothing."""

from __future__ import annotations

import os
import subprocess
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from bench.support import HPCGW, slurm_copies
from devcluster import ClusterSpec
from gateway.app import create_app
from gateway.client import wait_healthy
from gateway.site import accounts
from gateway.store.db import make_engine
from gateway.store.models import WorkerStatus
from tests.conftest import set_up_tenancy
from tests.gateway.conftest import auth
from tests.slurm.support import (
    DATA,
    ENDED,
    NO_RATE_LIMIT,
    QUICK,
    SLEEPER,
    gateway_config,
    python_algorithm,
    quick_job,
    roomy_accounts,
    sacct_rows,
    serve,
    sleeper_job,
    submit_until_answered,
    wait_all_ended,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.slurm
TELLER = python_algorithm("teller", DATA / "coalesced_task.py")


def teller_job(dataset_hash: str, value: int, **parameters: object) -> dict[str, object]:
    return {
        "name": f"teller-{value}",
        "algorithm": "teller",
        "dataset_id": "intents",
        "train_data_version_hash": dataset_hash,
        "time_limit_min": 5,
        "parameters": {"VALUE": value, **parameters},
    }


def sacct_elements(master: str) -> dict[str, tuple[str, str]]:
    """{A_i: (state, exit code)} of an array, from accounting, once every element has ended there."""
    deadline = time.monotonic() + 120
    while True:
        rows = {i: (s.split()[0], e) for i, s, e in sacct_rows(master, "JobID,State,ExitCode")}
        if all(s not in ("PENDING", "RUNNING") for s, _ in rows.values()) or time.monotonic() > deadline:
            return rows
        time.sleep(1)


def test_fifty_same_shape_jobs_are_one_array_and_each_keeps_its_own_outcome(
    cluster: ClusterSpec, tmp_path: Path, dataset_hash: str
) -> None:
    limits: dict[str, Any] = {"team-a": {"max_running_jobs": 60, "max_queued_jobs": 100}}
    config = gateway_config(tmp_path, **limits)
    accounts.sync(config)  # room for fifty at once in Slurm too (the example's account runs 2)
    app = create_app(config, run_worker=False)
    try:
        with TestClient(app) as client:
            client.post("/v1/algorithms", json={**TELLER, "team": "team-a"}, headers=auth("admin"))
            bodies = [teller_job(dataset_hash, i) for i in range(50)]
            bodies[7]["parameters"]["EXIT_CODE"] = 3  # type: ignore[index]
            bodies[10]["parameters"]["SLEEP_S"] = 120  # type: ignore[index]  # (cancelled while it sleeps)
            # Half POSTed one by one, half in one POST /v1/jobs/batch: one array all the same.
            ids = [client.post("/v1/jobs", json=b, headers=auth("alice")).json()["id"] for b in bodies[:25]]
            batch = client.post("/v1/jobs/batch", json={"jobs": bodies[25:]}, headers=auth("alice")).json()
            assert [item["status"] for item in batch["items"]] == [201] * 25, batch
            ids += [item["job"]["id"] for item in batch["items"]]
            app.state.worker.start()  # all fifty are waiting when the first cycle runs: "sent at once"
            try:
                queued = {i: wait_for(client, i, {"queued", "launching", "running", *ENDED}) for i in ids}
                slurm_ids = [queued[i]["slurm_job_id"] for i in ids]
                master = slurm_ids[0].partition("_")[0]
                wait_for(client, ids[10], {"launching", "running"})  # running in Slurm
                client.post(f"/v1/jobs/{ids[10]}/cancel", headers=auth("alice"))
                final = {i: wait_for(client, i, ENDED, timeout_s=300) for i in ids}
                logs = {i: client.get(f"/v1/jobs/{i}/logs", headers=auth("alice")).text for i in (ids[0], ids[33])}
                metrics = {i: client.get(f"/v1/jobs/{i}/metrics", headers=auth("alice")).json() for i in ids}
            finally:
                app.state.worker.stop()
    finally:
        set_up_tenancy(ClusterSpec.load() or ClusterSpec())
    in_sacct = sacct_elements(master)
    states = Counter(j["state"] for j in final.values())
    summary = f"array {master}; sacct {Counter(s for s, _ in in_sacct.values())}; gateway {dict(states)}"
    assert slurm_ids == [f"{master}_{k}" for k in range(50)], summary
    assert len(in_sacct) == 50, summary
    assert in_sacct[f"{master}_7"] == ("FAILED", "3:0") and final[ids[7]]["exit_code"] == 3, summary
    assert in_sacct[f"{master}_10"][0] == "CANCELLED" and final[ids[10]]["state"] == "cancelled", summary
    others = [k for k in range(50) if k not in (7, 10)]
    assert all(in_sacct[f"{master}_{k}"] == ("COMPLETED", "0:0") for k in others), summary
    assert all(final[ids[k]]["state"] == "succeeded" and final[ids[k]]["exit_code"] == 0 for k in others), summary
    assert final[ids[7]]["state"] == "failed", summary
    for k in (0, 33):
        assert f"job {ids[k]} value {k} element {k}" in logs[ids[k]], logs[ids[k]][-500:]
    assert all(metrics[ids[k]]["epochs"][0]["value"] == k for k in others), summary


def test_other_shapes_and_users_in_one_cycle_go_out_as_separate_arrays(
    cluster: ClusterSpec, tmp_path: Path, dataset_hash: str
) -> None:
    roomy = {"max_running_jobs": 20, "max_queued_jobs": 20}
    limits: dict[str, Any] = {"team-a": roomy, "team-b": roomy}
    config = gateway_config(tmp_path, **limits)
    app = create_app(config, run_worker=False)
    with TestClient(app) as client:
        for team in ("team-a", "team-b"):
            client.post("/v1/algorithms", json={**QUICK, "name": f"quick-{team}", "team": team}, headers=auth("admin"))
        groups: dict[str, list[str]] = {}

        def send(label: str, user: str, count: int, **overrides: object) -> None:
            team = "team-b" if user == "bob" else "team-a"
            body = quick_job(dataset_hash) | {"algorithm": f"quick-{team}", **overrides}
            if user == "admin":
                body["team"] = "team-a"
            answers = [client.post("/v1/jobs", json=body, headers=auth(user)) for _ in range(count)]
            assert all(a.status_code == 201 for a in answers), [a.text for a in answers]
            groups[label] = [a.json()["id"] for a in answers]

        send("alice 5 min", "alice", 3)
        send("alice 6 min", "alice", 2, time_limit_min=6)
        send("admin 5 min", "admin", 2)
        send("bob 5 min", "bob", 2)
        app.state.worker.start()
        try:
            final = {i: wait_for(client, i, ENDED, user="admin") for ids in groups.values() for i in ids}
        finally:
            app.state.worker.stop()
    arrays = {label: {final[i]["slurm_job_id"].partition("_")[0] for i in ids} for label, ids in groups.items()}
    users = {}
    for label, masters in arrays.items():
        out = subprocess.run(
            ["sacct", "-X", "-n", "-P", "-j", ",".join(masters), "-o", "JobID,User,Timelimit"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        users[label] = {tuple(line.split("|")[1:]) for line in out.splitlines()}
    summary = f"arrays {arrays}; sacct (user, time limit) {users}"
    assert all(len(m) == 1 for m in arrays.values()) and len(set.union(*arrays.values())) == 4, summary
    assert users == {
        "alice 5 min": {("alice", "00:05:00")},
        "alice 6 min": {("alice", "00:06:00")},
        "admin 5 min": {("admin", "00:05:00")},
        "bob 5 min": {("bob", "00:05:00")},
    }, summary
    assert {j["state"] for j in final.values()} == {"succeeded"}, summary


def _active_worker(engine: Any) -> tuple[int, int]:
    """(epoch, pid) of the active worker, from its status row."""
    with Session(engine) as session:
        row = session.get(WorkerStatus, "worker")
        assert row is not None
        return row.epoch, int(row.holder.rpartition(":")[2])


def test_two_gateways_on_postgresql_survive_sigkills_of_the_active_worker(
    cluster: ClusterSpec, tmp_path: Path, dataset_hash: str, postgres_database: str
) -> None:
    config = write_config(
        tmp_path / "gateway.toml",
        tmp_path,
        max_running_jobs=200,
        max_queued_jobs=400,
        rate_limits=NO_RATE_LIMIT,
        database_url=postgres_database,
    )
    engine = make_engine(postgres_database)
    began = datetime.now(UTC)
    procs: list[subprocess.Popen[bytes]] = []
    takeovers: list[float] = []
    with roomy_accounts(config), open(tmp_path / "gateway.log", "ab") as log:
        try:
            bases = []
            for port, processes in ((18971, "2"), (18972, "1")):  # two gateways, API only; one runs 2 processes
                argv = [HPCGW, "serve", "--config", str(config), "--port", str(port), "--workers", processes]
                procs.append(serve([*argv, "--no-worker"], log))
                bases.append(f"http://127.0.0.1:{port}")
            for base, proc in zip(bases, procs, strict=True):
                wait_healthy(base, alive=lambda p=proc: p.poll() is None)  # type: ignore[misc]
            workers = [serve([HPCGW, "worker", "--config", str(config)], log) for _ in range(2)]
            procs += workers
            deadline = time.monotonic() + 60
            while _worker_epoch(engine) == 0:
                assert time.monotonic() < deadline, "no worker became active"
                time.sleep(0.2)
            registered = httpx.post(
                f"{bases[0]}/v1/algorithms", json={**QUICK, "team": "team-a"}, headers=auth("admin")
            )
            assert registered.status_code == 201, registered.text
            keys = [f"pg-burst-{i:03d}" for i in range(90)]
            deadline = time.monotonic() + 600
            answers: dict[str, tuple[int, str]] = {}
            for n, key in enumerate(keys):
                answers[key] = submit_until_answered(bases[n % 2], quick_job(dataset_hash, key), deadline)
                if n in (20, 45, 70):  # SIGKILL the active worker mid-burst; a supervisor restarts it
                    epoch, pid = _active_worker(engine)
                    killed_at = time.monotonic()
                    os.kill(pid, 9)
                    while _worker_epoch(engine) == epoch:
                        assert time.monotonic() < killed_at + 60, "no standby took over"
                        time.sleep(0.05)
                    takeovers.append(time.monotonic() - killed_at)
                    dead = next(w for w in workers if w.pid == pid or w.poll() is not None)
                    dead.wait(timeout=30)
                    workers[workers.index(dead)] = fresh = serve([HPCGW, "worker", "--config", str(config)], log)
                    procs.append(fresh)
            ids = {job_id for _, job_id in answers.values()}
            states = wait_all_ended(bases[1], sorted(ids), timeout_s=600)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.terminate()
            for proc in procs:
                proc.wait(timeout=60)
    in_slurm = slurm_copies(engine, ids, began)
    engine.dispose()
    summary = (
        f"{len(keys)} keys, {len(ids)} jobs, states {dict(Counter(states.values()))}; take-overs after "
        f"{[round(t, 2) for t in takeovers]} s; in sacct {len(in_slurm)} entries, "
        f"{sum(n > 1 for n in in_slurm.values())} more than once, unclaimed {[k for k in in_slurm if k[0] == '?']}"
    )
    print(summary)
    assert len(takeovers) == 3 and len(ids) == len(keys), summary
    assert set(states.values()) == {"succeeded"}, summary
    assert set(in_slurm) == ids and set(in_slurm.values()) == {1}, summary


def _worker_epoch(engine: Any) -> int:
    with Session(engine) as session:
        row = session.get(WorkerStatus, "worker")
        return 0 if row is None else row.epoch


def test_a_second_worker_on_sqlite_refuses_to_start(cluster: ClusterSpec, tmp_path: Path) -> None:
    config = write_config(tmp_path / "gateway.toml", tmp_path)
    with open(tmp_path / "worker.log", "ab") as log:
        first = serve([HPCGW, "worker", "--config", str(config)], log)
        try:
            deadline = time.monotonic() + 60
            while not (tmp_path / "gw.db.worker.lock").exists() or _worker_epoch(make_engine(_sqlite(tmp_path))) == 0:
                assert first.poll() is None and time.monotonic() < deadline, (tmp_path / "worker.log").read_text()
                time.sleep(0.2)
            # [poll] worker_nice, 10 by default: on a host shared with the API, requests are answered first
            assert os.getpriority(os.PRIO_PROCESS, first.pid) == 10
            second = serve([HPCGW, "worker", "--config", str(config)], subprocess.PIPE)
            _, err = second.communicate(timeout=60)
        finally:
            first.terminate()
            first.wait(timeout=60)
    assert second.returncode == 2, err
    assert "another worker (" in err.decode() and f":{first.pid}) is active on this SQLite database" in err.decode()
    assert first.returncode == 0  # SIGTERM: a clean stop


def _sqlite(root: Path) -> str:
    return f"sqlite:///{root}/gw.db"


def test_a_waiting_element_cancelled_alone_ends_cancelled(
    cluster: ClusterSpec, tmp_path: Path, dataset_hash: str
) -> None:
    """Slurm keeps no record of a pending array element cancelled on its own: the gateway must still end it."""
    limits: dict[str, Any] = {"team-a": {"max_running_jobs": 10, "max_queued_jobs": 20}}
    config = gateway_config(tmp_path, **limits)
    accounts.sync(config)
    app = create_app(config, run_worker=False)
    try:
        with TestClient(app) as client:
            client.post("/v1/algorithms", json={**SLEEPER, "team": "team-a"}, headers=auth("admin"))
            ids = [
                client.post("/v1/jobs", json=sleeper_job(dataset_hash), headers=auth("alice")).json()["id"]
                for _ in range(8)
            ]
            app.state.worker.start()
            try:
                queued = {i: wait_for(client, i, {"queued", "launching", "running"}) for i in ids}
                waiting = [
                    i for i in ids if client.get(f"/v1/jobs/{i}", headers=auth("alice")).json()["state"] == "queued"
                ]
                assert waiting, "every element started: nothing to cancel while it waits"
                victim = waiting[-1]
                client.post(f"/v1/jobs/{victim}/cancel", headers=auth("alice"))
                done = wait_for(client, victim, {"cancelled"}, timeout_s=60)
                assert done["state"] == "cancelled" and "cancelled while waiting" in (done["reason"] or ""), done
                assert (
                    queued[victim]["slurm_job_id"].partition("_")[0] == queued[ids[0]]["slurm_job_id"].partition("_")[0]
                )
            finally:
                app.state.worker.stop()
    finally:
        set_up_tenancy(ClusterSpec.load() or ClusterSpec())
