"""Team B's wait under team A's flood, against its wait on an idle cluster, measured back to back.

Team A holds `max_running_jobs = 2` (Slurm's GrpJobs, written by `hpcgw accounts sync` from the same
configuration) and floods: single jobs, sweeps, and `sbatch` from a login node as alice. Team B then submits
one job at a time; its wait is from the POST to Slurm's start time (sacct, 1 s resolution).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from bench.support import ADMIN, TEAM_B, TOKEN, both_teams, gateway, scancel_all
from gateway.config import load_config
from gateway.site import accounts

LIMITED = both_teams(max_running_jobs=2, max_queued_jobs=200)


def bench_fairness(
    root: Path, repeats: int = 3, sweeps: int = 10, tasks: int = 10, singles: int = 20
) -> dict[str, Any]:
    with gateway(root, teams=LIMITED) as base:
        accounts.sync(load_config(root / "gateway.toml"))  # Slurm holds team-a to the same 2 running jobs
        for team, code in (("team-a", "import time; time.sleep(60)"), ("team-b", "pass")):
            body = {"name": "work", "version": "1", "team": team, "image": "w.sif", "command": ["true"]}
            httpx.post(
                f"{base}/v1/algorithms", json={**body, "local_command": [sys.executable, "-c", code]}, headers=ADMIN
            )
        idle = [_b_wait(base) for _ in range(repeats)]
        _flood(base, sweeps, tasks, singles)
        flooded = [_b_wait(base) for _ in range(repeats)]
        a_running = _running("team-a")
        scancel_all()
    return {
        "idle_s": statistics.median(idle),
        "flood_s": statistics.median(flooded),
        "ratio": statistics.median(flooded) / max(statistics.median(idle), 1.0),
        "team_a_running_during_flood": a_running,
        "team_a_work": {"sweeps": sweeps, "tasks_each": tasks, "singles": singles, "direct": 5},
        "idle_all": idle,
        "flood_all": flooded,
    }


def _flood(base: str, sweeps: int, tasks: int, singles: int) -> None:
    job = {"algorithm": "work", "dataset_id": "d", "train_data_version_hash": "v1", "time_limit_min": 10}
    with httpx.Client(headers=TOKEN, timeout=60) as client:
        for _ in range(sweeps):
            space = {"kind": "grid", "grid": {"LR": [i / 100 for i in range(tasks)]}}
            client.post(f"{base}/v1/sweeps", json={"name": "s", "max_parallel": 2, "space": space, "base": job})
        for _ in range(singles):
            client.post(f"{base}/v1/jobs", json=job)
    for _ in range(5):  # alice on a login node, past the gateway
        subprocess.run(
            ["runuser", "-u", "alice", "--", "sbatch", "-p", "team-a", "-A", "team-a", "-o", "/dev/null",
             "--wrap", "sleep 60"],
            check=True, capture_output=True, cwd="/tmp",
        )  # fmt: skip
    deadline = time.monotonic() + 120
    while _running("team-a") < 2 and time.monotonic() < deadline:
        time.sleep(0.5)


def _b_wait(base: str) -> float:
    job = {"algorithm": "work", "dataset_id": "d", "train_data_version_hash": "v1", "time_limit_min": 5}
    posted = time.time()
    created = httpx.post(f"{base}/v1/jobs", json=job, headers=TEAM_B, timeout=60).json()
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        seen = httpx.get(f"{base}/v1/jobs/{created['id']}", headers=TEAM_B, timeout=60).json()
        if seen["state"] in ("succeeded", "failed", "cancelled"):
            start = seen.get("start_time")
            return (datetime.fromisoformat(start).timestamp() if start else time.time()) - posted
        time.sleep(0.2)
    raise TimeoutError(f"team-b's job {created['id']} did not finish")


def _running(account: str) -> int:
    out = subprocess.run(["squeue", "-h", "-A", account, "-t", "RUNNING", "-o", "%i"], capture_output=True, text=True)
    return len(out.stdout.split())
