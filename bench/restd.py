"""The gateway against Debian's slurmrestd, side by side in one run on the same cluster (issue 13).

slurmrestd runs as an unprivileged user (bob) on a unix socket with rest_auth/local, as its documentation asks;
both are driven by the same client (bench/submitter.py, as bob for slurmrestd) and submit to team-b, whose
partition is set DOWN for the duration so that every job stays pending (really in Slurm, never running).

- submit p50/p99 at 1 and 16 clients, and a raw ``sbatch`` for the single-client ratio;
- accepted per second, and for the gateway the jobs per second that reach Slurm (until none is left accepted);
- GET p99 with 10,000 tracked jobs while the worker polls them;
- failover: two worker processes on PostgreSQL, the active one SIGKILLed 10 times in a burst of submissions;
  take-over times from the status row, and lost or duplicated jobs counted in sacct.
"""

from __future__ import annotations

import json
import os
import pwd
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text
from sqlmodel import Session

from bench.support import (
    HPCGW,
    TEAM_B,
    TOKEN,
    both_teams,
    gateway,
    register,
    request,
    scancel_all,
    slurm_copies,
    summary,
    timed,
)
from devcluster.users import as_gateway
from gateway.config import load_config
from gateway.site import accounts
from gateway.store.db import make_engine
from gateway.store.models import WorkerStatus

REPO = Path(__file__).resolve().parent.parent
RESTD_USER = "bob"
TOKEN_B = TEAM_B["Authorization"].removeprefix("Bearer ")
# The teams' tables for this case: room for 20,000 jobs in Slurm (a job waiting there counts against
# max_running_jobs; GrpSubmitJobs follows from both).
TEAMS = both_teams(max_running_jobs=20000, max_queued_jobs=20000)
RESTD_BODY = {
    "job": {
        "name": "restd-bench",
        "partition": "team-b",
        "account": "team-b",
        "current_working_directory": "/tmp",
        "environment": {"PATH": "/usr/bin:/bin"},
        "standard_output": "/dev/null",
        "time_limit": 5,
        "nodes": 1,
        "tasks": 1,
    },
    "script": "#!/bin/bash\ntrue\n",
}


def bench_restd(root: Path, *, api_processes: int = 2, tracked: int = 10_000, kills: int = 10) -> dict[str, Any]:
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o711)
    results: dict[str, Any] = {"api_processes": api_processes}
    partition("team-b", "DOWN")
    try:
        with slurmrestd(root) as sock, gateway(root, teams=TEAMS, api_processes=api_processes) as base:
            accounts.sync(load_config(root / "gateway.toml"))
            digest = register(base, root)
            gw_body = json.dumps(request(digest, team="team-b"))
            restd_url = "http://localhost/slurm/v0.0.38/job/submit"
            results["raw_sbatch_1_client"] = summary([timed(_sbatch_as_restd_user) for _ in range(50)])
            for clients, count in ((1, 100), (16, 400)):
                restd = submit(restd_url, json.dumps(RESTD_BODY), clients, count, socket=sock, user=RESTD_USER)
                scancel_all()
                gw = submit(f"{base}/v1/jobs", gw_body, clients, count, token=TOKEN_B)
                gw["reached_slurm_s"] = _until_dispatched(base, gw["started_at"])
                gw["reaching_slurm_per_s"] = count / gw["reached_slurm_s"]
                results[f"{clients}_clients"] = {"slurmrestd": restd, "gateway": gw}
                print(f"restd case, {clients} clients: {_brief(restd)} | gateway {_brief(gw)}", flush=True)
                scancel_all()
            results["16_clients_batched"] = _batched(base, gw_body)
            print(f"restd case, 16 clients, batches of {BATCH}: {_brief(results['16_clients_batched'])}", flush=True)
            scancel_all()
            results["tracked"] = _get_with_tracked(base, gw_body, tracked)
            print(f"restd case, tracked: {results['tracked']}", flush=True)
        scancel_all()
        results["failover"] = _failover(root / "failover", kills)
    finally:
        scancel_all()
        partition("team-b", "UP")
    return results


def _brief(figures: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.1f}" for k, v in figures.items() if isinstance(v, float) and k != "started_at")


def partition(name: str, state: str) -> None:
    subprocess.run(["scontrol", "update", f"PartitionName={name}", f"State={state}"], check=True)


@contextmanager
def slurmrestd(root: Path) -> Iterator[str]:
    """Debian's slurmrestd as ``RESTD_USER`` on a unix socket (it refuses to run as root, and rest_auth/local
    authenticates the socket's peer)."""
    folder = root / "restd"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.chown(folder, RESTD_USER)
    sock = folder / "restd.sock"
    log = open(folder / "slurmrestd.log", "ab")
    proc = subprocess.Popen(
        ["slurmrestd", "-a", "rest_auth/local", f"unix:{sock}"],
        stdout=log,
        stderr=subprocess.STDOUT,
        **as_user(RESTD_USER),  # its own group too: slurmrestd refuses to run with root's
    )
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"slurmrestd did not start: see {folder / 'slurmrestd.log'}")
            time.sleep(0.1)
        yield str(sock)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def as_user(name: str) -> dict[str, Any]:
    """Popen arguments that run a command as ``name`` with its own groups, as a login would."""
    entry = pwd.getpwnam(name)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": os.getgrouplist(name, entry.pw_gid)}


def _sbatch_as_restd_user() -> None:
    subprocess.run(
        ["sbatch", "--parsable", "-p", "team-b", "-A", "team-b", "-o", "/dev/null", "-t", "5", "--wrap", "true"],
        check=True,
        capture_output=True,
        cwd="/tmp",
        **as_user(RESTD_USER),
    )


def submit(
    url: str,
    body: str,
    clients: int,
    count: int,
    *,
    socket: str | None = None,
    token: str | None = None,
    user: str | None = None,
    batch: int = 0,
) -> dict[str, Any]:
    """bench/submitter.py as a process of its own (as ``user``): its latencies summarised."""
    argv = [sys.executable, "-m", "bench.submitter", "--url", url, "--body", body]
    argv += ["--clients", str(clients), "--count", str(count)]
    if socket:
        argv += ["--socket", socket]
    if token:
        argv += ["--token", token]
    if batch:
        argv += ["--batch", str(batch)]
    started_at = time.time()
    out = subprocess.run(argv, capture_output=True, text=True, check=True, cwd=REPO, **(as_user(user) if user else {}))
    data = json.loads(out.stdout)
    if data["error_count"]:
        raise RuntimeError(
            f"{data['error_count']} of {len(data['latencies'])} requests to {url} failed: {data['errors']}"
        )
    return summary(data["latencies"]) | {
        "submissions": count,
        "clients": clients,
        "accepted_per_s": count / data["wall_s"],
        "started_at": started_at,
    }


BATCH = 50  # jobs per POST /v1/jobs/batch in the batched case
BATCHED_JOBS = 4000


def _batched(base: str, body: str) -> dict[str, Any]:
    """16 clients sending ``BATCHED_JOBS`` jobs, ``BATCH`` to a request: the same jobs and the same count from the
    first request until none is left accepted, one request now carrying many jobs as a sweep does."""
    sent = submit(f"{base}/v1/jobs/batch", body, 16, BATCHED_JOBS, token=TOKEN_B, batch=BATCH)
    sent["reached_slurm_s"] = _until_dispatched(base, sent["started_at"])
    return sent | {"batch": BATCH, "reaching_slurm_per_s": BATCHED_JOBS / sent["reached_slurm_s"]}


def _until_dispatched(base: str, started_at: float) -> float:
    """Seconds from the first submission until no job of the gateway is left waiting to reach Slurm."""
    with httpx.Client(headers=TEAM_B) as client:
        deadline = time.monotonic() + 900
        while client.get(f"{base}/v1/jobs?state=accepted&limit=1").json()["total"] > 0:
            if time.monotonic() > deadline:
                raise TimeoutError("the gateway did not dispatch its jobs within 900 s")
            time.sleep(0.02)
    return time.time() - started_at


def _get_with_tracked(base: str, body: str, tracked: int) -> dict[str, Any]:
    """``tracked`` jobs pending in Slurm (team-b is DOWN) and followed by the worker; then GETs of one job."""
    sent = submit(f"{base}/v1/jobs", body, 16, tracked, token=TOKEN_B)
    sent["reached_slurm_s"] = _until_dispatched(base, sent["started_at"])
    with httpx.Client(headers=TEAM_B) as client:
        in_slurm = client.get(f"{base}/v1/jobs?state=queued&limit=1").json()["total"]
        ids = [j["id"] for j in client.get(f"{base}/v1/jobs?limit=1000").json()["items"]]
        health = client.get(f"{base}/healthz").json()
        gets = [timed(partial(_get, client, f"{base}/v1/jobs/{ids[i % len(ids)]}")) for i in range(2000)]
        polls = client.get(f"{base}/healthz").json()["poll_cycles"] - health["poll_cycles"]
    return {
        "submitted": sent | {"reaching_slurm_per_s": tracked / sent["reached_slurm_s"]},
        "tracked_in_slurm": in_slurm,
        "worker_polls_during_gets": polls,
        "get": summary(gets),
    }


# --- failover ----------------------------------------------------------------------------------------------------


def postgres_database() -> str:
    """A new, empty database on the project's PostgreSQL (started if it is not)."""
    out = subprocess.run(
        ["bash", str(REPO / "scripts" / "postgres-dev.sh"), "up", str(REPO / ".hpcgw" / "postgres")],
        capture_output=True,
        text=True,
        check=True,
    )
    url = out.stdout.strip().splitlines()[-1]
    name = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return url.rsplit("/", 1)[0] + f"/{name}"


def _status(engine: Any) -> tuple[int, int]:
    with Session(engine) as session:
        row = session.get(WorkerStatus, "worker")
        return (0, 0) if row is None else (row.epoch, int(row.holder.rpartition(":")[2] or 0))


def _failover(root: Path, kills: int, jobs: int = 300) -> dict[str, Any]:
    """One API and two `hpcgw worker` processes on PostgreSQL; while ``jobs`` submissions arrive, the active
    worker is SIGKILLed ``kills`` times and started again (as a supervisor would)."""
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o711)
    url = postgres_database()
    engine = make_engine(url)
    began = datetime.now(UTC)
    workers: list[subprocess.Popen[bytes]] = []
    takeovers: list[float] = []
    with gateway(root, teams=TEAMS, database_url=url, with_worker=False) as base:
        digest = register(base, root)
        config = str(root / "gateway.toml")
        log = open(root / "workers.log", "ab")

        def start_worker() -> subprocess.Popen[bytes]:
            return subprocess.Popen([HPCGW, "worker", "--config", config], stdout=log, stderr=log, **as_gateway())

        workers += [start_worker(), start_worker()]
        while _status(engine)[0] == 0:
            time.sleep(0.05)
        ids: dict[str, str] = {}

        def burst() -> None:
            with httpx.Client(headers=TOKEN, timeout=60) as client:
                for n in range(jobs):
                    body = request(digest, idempotency_key=f"failover-{n}")
                    ids[f"failover-{n}"] = client.post(f"{base}/v1/jobs", json=body).raise_for_status().json()["id"]
                    time.sleep(0.02)

        sender = threading.Thread(target=burst)
        sender.start()
        rng = random.Random(13)  # noqa: S311  (moments to kill at, not secrets)
        interval = load_config(Path(config)).poll.interval_s
        for _ in range(kills):
            time.sleep(rng.uniform(0.3, 1.5))
            epoch, pid = _status(engine)
            killed = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            while _status(engine)[0] == epoch:
                time.sleep(0.005)
            takeovers.append(time.monotonic() - killed)
            for i, proc in enumerate(workers):
                if proc.poll() is not None:
                    workers[i] = start_worker()
        sender.join()
        with httpx.Client(headers=TOKEN) as client:
            deadline = time.monotonic() + 900
            while any(
                client.get(f"{base}/v1/jobs/{i}").json()["state"] not in ("succeeded", "failed", "cancelled")
                for i in ids.values()
            ):
                if time.monotonic() > deadline:
                    raise TimeoutError("the failover burst's jobs did not end within 900 s")
                time.sleep(1)
            states = [client.get(f"{base}/v1/jobs/{i}").json()["state"] for i in ids.values()]
        for proc in workers:
            proc.terminate()
        for proc in workers:
            proc.wait(timeout=60)
        log.close()
    copies = slurm_copies(engine, set(ids.values()), began)
    engine.dispose()
    return {
        "kills": kills,
        "poll_interval_s": interval,
        "takeover_s": takeovers,
        "takeover_max_s": max(takeovers),
        "jobs": len(ids),
        "succeeded": states.count("succeeded"),
        "lost": len(set(ids.values()) - set(copies)),
        "duplicated": sum(n - 1 for k, n in copies.items() if n > 1) + sum(n for k, n in copies.items() if k[0] == "?"),
    }


def _get(client: httpx.Client, url: str) -> None:
    client.get(url).raise_for_status()
