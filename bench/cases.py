"""The measurements themselves, each side by side with what it is compared to, on the same cluster."""

from __future__ import annotations

import statistics
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from bench.support import (
    TEAM_B,
    TOKEN,
    _cpu,
    _wait_idle,
    _wait_marker,
    counting_sbatch,
    gateway_settings,
    request,
    sbatch_hold,
    scancel_all,
    summary,
    team,
    timed,
)
from gateway.config import GatewayConfig
from gateway.store.db import make_engine, migrate
from gateway.store.models import Job
from gateway.worker.loop import Worker
from launchers import JobSpec, ListSpace, submit, sweep
from launchers.runtime.markers import JobMarkers
from launchers.states import JobState


def bench_submission(root: Path, base: str, digest: str, n: int) -> dict[str, Any]:
    """The three single-client methods interleaved, one of each per round, so that all see the same load
    (the gateway's worker submits the POSTed jobs in the background on this 2-core machine)."""
    spec = JobSpec(
        partition="team-a", command=("true",), folder=root / "launch", extra_sbatch=("--hold",), time_limit_min=5
    )
    raw, launched, one = [], [], []
    with httpx.Client(headers=TOKEN) as client:
        for _ in range(n):
            raw.append(timed(sbatch_hold))
            launched.append(timed(lambda: submit(spec)))
            one.append(timed(lambda: client.post(f"{base}/v1/jobs", json=request(digest)).raise_for_status()))
    scancel_all()

    def post() -> float:
        with httpx.Client(headers=TOKEN) as c:
            return timed(lambda: c.post(f"{base}/v1/jobs", json=request(digest)).raise_for_status())

    started = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        sixteen = list(pool.map(lambda _: post(), range(n * 4)))
    concurrent_s = time.perf_counter() - started
    time.sleep(3)
    scancel_all()
    return {
        "raw_sbatch": summary(raw) | {"per_s": n / sum(raw)},
        "launchers_submit": summary(launched) | {"per_s": n / sum(launched)},
        "post_1_client": summary(one) | {"per_s": n / sum(one)},
        "post_16_clients": summary(sixteen) | {"per_s": len(sixteen) / concurrent_s},
    }


# --- 2. tracking -----------------------------------------------------------------------------------------------


def bench_tracking(root: Path, counts: list[int], cycles: int) -> dict[str, Any]:
    """Held jobs linked into a gateway database; then the worker's poll cycles, measured one by one."""
    config = GatewayConfig.model_validate(
        gateway_settings(
            root,
            database_url=f"sqlite:///{root}/tracking.db",
            job_root=str(root / "tj"),
            teams={"team-a": team("team-a")},
            tokens=[{"user": "a", "team": "team-a", "token": "x" * 30}],
        )
    )
    engine = make_engine(config.database_url)
    migrate(engine)
    worker = Worker(engine, config)
    results: dict[str, Any] = {}
    ids: list[str] = []
    from sqlmodel import Session, select

    for count in counts:
        while len(ids) < count:
            ids.append(sbatch_hold())
        with Session(engine) as session:
            known = set(session.exec(select(Job.slurm_job_id)).all())
            for slurm_id in ids:
                if slurm_id not in known:
                    session.add(
                        Job(
                            name="b",
                            team="team-a",
                            user="a",
                            state=JobState.QUEUED,
                            slurm_job_id=slurm_id,
                            partition="team-a",
                            account="team-a",
                            nodes=1,
                            tasks_per_node=1,
                            gpus_per_node=0,
                            cpus_per_task=1,
                            time_limit_min=5,
                            algorithm="quick",
                            algorithm_version="1",
                            image="q",
                            command=["true"],
                            dataset_id="d",
                            train_data_version_hash="h",
                            parameters={},
                            folder=str(root / "tj"),
                            submit_folder=str(root / "tj"),
                        )
                    )
            session.commit()
        commands, cpu, wall = [], [], []
        for _ in range(cycles):
            before_cmd = worker.stats.slurm_commands
            before_cpu = _cpu()
            wall.append(timed(worker.tracking.poll))
            cpu.append(_cpu() - before_cpu)
            commands.append(worker.stats.slurm_commands - before_cmd)
        results[str(count)] = {
            "slurm_commands_per_cycle": max(commands),
            "cpu_s_per_cycle": statistics.median(cpu),
            "wall_s_per_cycle": statistics.median(wall),
        }
    engine.dispose()
    return results


def bench_get(root: Path, base: str, digest: str, jobs: int, gets: int) -> dict[str, Any]:
    """GET latency while the worker follows ``jobs`` active jobs: team-b's partition is set DOWN, so its jobs
    stay pending in Slurm (really tracked, never running) while the GETs are timed."""
    subprocess.run(["scontrol", "update", "PartitionName=team-b", "State=DOWN"], check=True)
    try:
        with httpx.Client(headers=TEAM_B) as client:
            ids = [client.post(f"{base}/v1/jobs", json=request(digest)).json()["id"] for _ in range(jobs)]
            deadline = time.monotonic() + 600
            while client.get(f"{base}/v1/jobs?state=accepted&limit=1").json()["total"] > 0:
                if time.monotonic() > deadline:
                    raise TimeoutError("the gateway did not dispatch the jobs within 600 s")
                time.sleep(1)
            tracked = client.get(f"{base}/v1/jobs?state=queued&limit=1").json()["total"]
            latencies = [timed(partial(_get, client, f"{base}/v1/jobs/{ids[i % len(ids)]}")) for i in range(gets)]
    finally:
        scancel_all()
        subprocess.run(["scontrol", "update", "PartitionName=team-b", "State=UP"], check=True)
    return {"jobs_in_db": len(ids), "jobs_tracked": tracked} | summary(latencies)


# --- 3. sweeps -------------------------------------------------------------------------------------------------


def bench_sweep(root: Path, n: int) -> dict[str, Any]:
    spec = JobSpec(
        partition="team-a", command=("true",), folder=root / "sweep", extra_sbatch=("--hold",), time_limit_min=5
    )
    single = JobSpec(
        partition="team-a", command=("true",), folder=root / "single", extra_sbatch=("--hold",), time_limit_min=5
    )
    with counting_sbatch(root) as calls:
        sweep_s = timed(lambda: sweep(spec, ListSpace(points=[{"I": i} for i in range(n)]), max_parallel=10))
        sweep_sbatch = calls()
        scancel_all()
        singles_s = timed(lambda: [submit(single) for _ in range(n)])
        singles_sbatch = calls() - sweep_sbatch
    scancel_all()
    return {
        "tasks": n,
        "sweep_s": sweep_s,
        "sweep_sbatch_calls": sweep_sbatch,
        "singles_s": singles_s,
        "singles_sbatch_calls": singles_sbatch,
    }


def bench_time_to_running(root: Path, base: str, digest: str, repeats: int) -> dict[str, Any]:
    from examples.smoke import submit_allreduce

    raw, gw = [], []
    for i in range(repeats):
        workdir = root / f"raw{i}"
        started = time.time()
        job_id, _ = submit_allreduce(workdir, partition="team-a")
        raw.append(_wait_marker(JobMarkers(workdir, job_id)) - started)
        _wait_idle()
        with httpx.Client(headers=TOKEN) as client:
            started = time.time()
            job = client.post(f"{base}/v1/jobs", json=request(digest, "allreduce", nodes=2, tasks_per_node=2)).json()
            while not (job := client.get(f"{base}/v1/jobs/{job['id']}").json())["slurm_job_id"]:
                time.sleep(0.02)
        folder = root / "jobs" / "team-a" / job["id"] / "job"
        gw.append(_wait_marker(JobMarkers(folder, job["slurm_job_id"])) - started)
        _wait_idle()
    return {
        "raw_sbatch_srun_s": statistics.median(raw),
        "gateway_s": statistics.median(gw),
        "raw_all": raw,
        "gateway_all": gw,
    }


def _get(client: httpx.Client, url: str) -> None:
    client.get(url).raise_for_status()
