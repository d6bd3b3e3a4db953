"""The dashboard's pages with 10,000 jobs in the database: how long each takes to render, server side.

The rows are what a busy gateway holds: two teams' jobs in every state (running, queued with reasons and
positions, waiting, ended), three history events each, 20 epochs of metrics on the running ones, and a sweep of
1,000 tasks. Each page is requested as a logged-in browser would (the cookie), through the app in-process, so
the figure is the gateway's own time: queries, template, response.
"""

from __future__ import annotations

import random
import statistics
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlmodel import Session

from bench.support import gateway_settings, team
from gateway.app import create_app
from gateway.config import GatewayConfig
from gateway.store.models import Job, JobEvent, Sweep, utcnow
from launchers.states import JobState

TARGET_S = 0.200
STATES = ["running"] * 2 + ["queued"] * 3 + ["accepted"] + ["succeeded"] * 10 + ["failed", "cancelled", "timeout"]


def _config(root: Path, database_url: str | None = None) -> GatewayConfig:
    return GatewayConfig.model_validate(
        gateway_settings(
            root,
            database_url=database_url or f"sqlite:///{root}/ui.db",
            teams={t: team(t, max_running_jobs=500, max_queued_jobs=5000) for t in ("a", "b")},
            tokens=[
                {"user": "alice", "team": "a", "token": "a" * 30},
                {"user": "admin", "role": "admin", "token": "r" * 30},  # not root: no token runs jobs as root
            ],
        )
    )


def _job(i: int, team: str, state: str, now: Any, sweep_id: str | None = None, index: int | None = None) -> Job:
    submitted = now - timedelta(seconds=i)
    epochs = 20 if state in ("running", "succeeded") else 0
    return Job(
        name=f"job-{i}",
        team=team,
        user="alice",
        state=JobState(state),
        slurm_job_id=str(100000 + i),
        reason="Priority" if state == "queued" else None,
        position_in_queue=i % 500 if state == "queued" else None,
        submit_time=submitted,
        start_time=submitted + timedelta(seconds=5) if state != "queued" and state != "accepted" else None,
        end_time=submitted + timedelta(seconds=60) if JobState(state).is_terminal else None,
        partition=team,
        account=team,
        nodes=2,
        tasks_per_node=2,
        gpus_per_node=0,
        cpus_per_task=1,
        time_limit_min=30,
        algorithm="intent-classifier",
        algorithm_version="1.0",
        image="x.sif",
        command=["python", "train.py"],
        dataset_id="intents",
        train_data_version_hash="v1",
        parameters={"LR": f"{0.05 + (i % 20) / 20:.2f}", "SEED": str(i % 7)},
        metrics=[
            {"epoch": e, "loss": 1 / e, "accuracy": min(0.99, 0.5 + e / 40 + (i % 20) / 100)}
            for e in range(1, epochs + 1)
        ],
        folder=f"/nonexistent/{i}",
        submit_folder=f"/nonexistent/{i}/job",
        sweep_id=sweep_id,
        task_index=index,
    )


def populate(config: GatewayConfig, jobs: int, sweep_tasks: int) -> dict[str, str]:
    rng = random.Random(7)  # noqa: S311 - the same bench rows every run, no secret
    now = utcnow()
    engine = create_app(config, run_worker=False).state.engine
    with Session(engine) as session:
        sweep = Sweep(name="lr", team="a", user="alice", max_parallel=10, space={}, task_count=sweep_tasks)
        session.add(sweep)
        session.flush()
        rows = [_job(i, "a", "succeeded", now, sweep.id, i) for i in range(sweep_tasks)]
        rows += [_job(i, rng.choice("ab"), rng.choice(STATES), now) for i in range(sweep_tasks, jobs)]
        session.add_all(rows)
        session.flush()
        session.add_all(
            JobEvent(job_id=j.id, state=JobState(s), at=j.submit_time)
            for j in rows
            for s in ("accepted", "queued", j.state)
        )
        session.commit()
        running = next(j.id for j in rows if j.state == "running" and j.team == "a")
        return {"sweep": sweep.id, "job": running}


def bench_ui(
    root: Path, jobs: int = 10_000, sweep_tasks: int = 1000, renders: int = 20, database_url: str | None = None
) -> dict[str, Any]:
    """``database_url``: PostgreSQL (production's database); SQLite in ``root`` by default."""
    root.mkdir(parents=True, exist_ok=True)
    config = _config(root, database_url)
    ids = populate(config, jobs, sweep_tasks)
    pages = {
        "team overview": ("a" * 30, "/ui/teams/a"),
        "job page": ("a" * 30, f"/ui/jobs/{ids['job']}"),
        "job curves (polled)": ("a" * 30, f"/ui/jobs/{ids['job']}/curves"),
        f"sweep page ({sweep_tasks} tasks)": ("a" * 30, f"/ui/sweeps/{ids['sweep']}?metric=accuracy&mode=max"),
        "admin view": ("r" * 30, "/ui/admin"),
    }
    database = "PostgreSQL" if database_url else "SQLite"
    results: dict[str, Any] = {"jobs": jobs, "database": database, "target_s": TARGET_S, "pages": {}}
    with TestClient(create_app(config, run_worker=False)) as client:
        for name, (token, path) in pages.items():
            client.cookies.set("hpcgw_ui", token, path="/ui")
            times = []
            for _ in range(renders + 2):
                start = time.perf_counter()
                response = client.get(path)
                times.append(time.perf_counter() - start)
                assert response.status_code == 200, (path, response.status_code)
            times = times[2:]  # the first renders compile the templates
            results["pages"][name] = {
                "p50_s": statistics.median(times),
                "max_s": max(times),
                "bytes": len(response.content),
            }
    return results


def bench_ui_both(root: Path) -> list[dict[str, Any]]:
    """SQLite, then the project's PostgreSQL, with the same rows."""
    from bench.restd import postgres_database

    return [bench_ui(root / "sqlite"), bench_ui(root / "postgresql", database_url=postgres_database())]


def ui_lines(runs: list[dict[str, Any]]) -> str:
    return "\n".join(_lines(run) for run in runs)


def _lines(results: dict[str, Any]) -> str:
    lines = [f"Dashboard pages, {results['jobs']:,} jobs in {results['database']}, server-side render:"]
    for name, page in results["pages"].items():
        verdict = "ok" if page["max_s"] <= results["target_s"] else "OVER the 200 ms target"
        lines.append(
            f"  {name:<28} p50 {page['p50_s'] * 1000:6.1f} ms   max {page['max_s'] * 1000:6.1f} ms   "
            f"{page['bytes'] / 1024:7.1f} KiB   {verdict}"
        )
    return "\n".join(lines)
