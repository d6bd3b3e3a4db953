"""What the health policy adds to a poll cycle: the same 1,000 active jobs, with and without its checks.

A 2-node cluster cannot run 1,000 jobs at once, so the running jobs are rows whose job folders hold what real
runs leave (four ranks' heartbeat files, a start marker, 20 epochs of metrics), and the checks run exactly as
the worker runs them (``HealthGuard.check`` on each row). The poll cycle beside it is a real one: the worker's
``poll`` over 1,000 held Slurm jobs (bench.cases.bench_tracking), measured in the same run.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

from bench.support import gateway_settings, team
from gateway.config import GatewayConfig
from gateway.run_health import HealthPolicy
from gateway.store.models import Job, utcnow
from gateway.worker.health import HealthGuard
from launchers.runtime.markers import JobMarkers, write_atomic
from launchers.states import JobState

RANKS = 4


def bench_health(root: Path, jobs: int = 1000, cycles: int = 7) -> dict[str, Any]:
    config = GatewayConfig.model_validate(
        gateway_settings(
            root,
            database_url=f"sqlite:///{root}/health.db",
            job_root=str(root / "hj"),
            teams={"team-a": team("team-a")},
            tokens=[{"user": "a", "team": "team-a", "token": "x" * 30}],
        )
    )
    policy = HealthPolicy(hang_timeout_s=600, max_loss=1e6, patience=50, heartbeat_s=10).model_dump()
    now = time.time()
    rows, started = [], {"size": RANKS, "restart": 0, "time": now - 100}
    for i in range(jobs):
        folder = root / "hj" / f"{i:05d}"
        markers = JobMarkers(folder, str(100_000 + i))
        for rank in range(RANKS):
            record = {"rank": rank, "host": f"n{rank % 2 + 1}", "time": now, "beats": 9, "interval_s": 10.0}
            record |= {"progress": {"step": 900, "epoch": 20, "loss": 0.25}, "progress_at": now - 1}
            markers.heartbeat_path(rank, 0).parent.mkdir(parents=True, exist_ok=True)
            write_atomic(markers.heartbeat_path(rank, 0), json.dumps(record))
        rows.append(
            Job(
                id=f"{i:016x}",
                name="h",
                team="team-a",
                user="a",
                state=JobState.RUNNING,
                slurm_job_id=str(100_000 + i),
                partition="team-a",
                account="team-a",
                nodes=2,
                tasks_per_node=2,
                gpus_per_node=0,
                cpus_per_task=1,
                time_limit_min=60,
                algorithm="x",
                algorithm_version="1",
                image="i",
                command=["true"],
                dataset_id="d",
                train_data_version_hash="h",
                parameters={},
                folder=str(folder),
                submit_folder=str(folder),
                metrics=[{"epoch": e, "loss": 1 / e, "accuracy": 0.5 + e / 100} for e in range(1, 21)],
                health=policy,
            )
        )
    guard = HealthGuard(config)
    walls = []
    for _ in range(cycles):
        at = utcnow()
        start = time.perf_counter()
        for job in rows:
            guard.check(job, started, "n[1-2]", at)
        walls.append(time.perf_counter() - start)
    verdicts = sum(1 for job in rows if job.health_verdict) + len(guard.requeues)
    return {
        "jobs": jobs,
        "ranks": RANKS,
        "health_s_reading_all": walls[0],  # every heartbeat file read (a first cycle, or one per heartbeat_s)
        "health_s_per_cycle": statistics.median(walls[1:]),  # the cycles between two reads
        "verdicts": verdicts,
    }
