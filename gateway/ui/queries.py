"""What each page shows, read from the database in a few indexed queries (a page never calls Slurm, and reads
at most a page's worth of rows however many jobs the database holds)."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import String, cast, func
from sqlalchemy import select as sa_select
from sqlalchemy.orm import defer
from sqlmodel import Session, col, select

from gateway.api.joblogs import rank_log, tail
from gateway.config import GatewayConfig
from gateway.store.models import Job, JobAttempt, JobEvent, Sweep, utcnow
from gateway.submit.job_requests import active_counts, counts_by_team
from launchers.states import FAILED_STATES, JobState

ROWS = 100  # per table on a page
RUNNING = (JobState.LAUNCHING, JobState.RUNNING)
QUEUED = (JobState.QUEUED, JobState.REQUEUED)
MAX_RANK_LOGS = 8
LOG_LINES = 40
# What a list of jobs never shows: JSON columns that would be decoded for every row.
LIST_DEFERRED = [defer(c) for c in (Job.metrics, Job.provenance, Job.health, Job.parameters, Job.command)]  # type: ignore[arg-type]


def quota(session: Session, config: GatewayConfig, team: str, counts: dict[str, int]) -> dict[str, Any]:
    """The team's use against its limits, and its configured share of the cluster's fair-share."""
    limits = config.teams[team]
    in_slurm, gpus = active_counts(session, team)
    shares = sum(t.fairshare for t in config.teams.values())
    return {
        "running_jobs": (in_slurm, limits.max_running_jobs),
        "gpus": (gpus, limits.max_gpus),
        "waiting": (counts.get(JobState.ACCEPTED, 0), limits.max_queued_jobs),
        "max_nodes": limits.max_nodes,
        "fairshare": (limits.fairshare, shares),
        "account": limits.account,
        "partitions": limits.partitions,
    }


def _jobs(session: Session, team: str, states: tuple[str, ...], *order: Any) -> list[Job]:
    query = (
        select(Job)
        .options(*LIST_DEFERRED)
        .where(Job.team == team, col(Job.state).in_(states))
        .order_by(*order)
        .limit(ROWS)
    )
    return list(session.exec(query))


def team_page(session: Session, config: GatewayConfig, team: str) -> dict[str, Any]:
    counts = counts_by_team(session).get(team, {})
    return {
        "team": team,
        "counts": counts,
        "quota": quota(session, config, team, counts),
        "running": _jobs(session, team, RUNNING, col(Job.start_time).desc()),
        "queued": _jobs(session, team, QUEUED, col(Job.position_in_queue).asc(), col(Job.submit_time).asc()),
        "waiting": _jobs(session, team, (JobState.ACCEPTED,), col(Job.submit_time).asc()),
        "failures": _jobs(session, team, tuple(s.value for s in FAILED_STATES), col(Job.end_time).desc(), col(Job.id))[
            :10
        ],
    }


def job_page(session: Session, job: Job, root: Path | None = None) -> dict[str, Any]:
    """``root``: the job root, from which the logs are read without following a link (gateway.api.joblogs)."""
    events = session.exec(select(JobEvent).where(JobEvent.job_id == job.id).order_by(col(JobEvent.id))).all()
    attempts = session.exec(
        select(JobAttempt).where(JobAttempt.job_id == job.id).order_by(col(JobAttempt.number))
    ).all()
    return {
        "job": job,
        "events": events,
        "attempts": attempts,
        "logs": rank_logs(job, root),
        "provenance": json.dumps(job.provenance, indent=2, sort_keys=True) if job.provenance else None,
        "curves": curves(job),
    }


def curves(job: Job) -> dict[str, Any]:
    """The recorded epochs as chart series: what the page draws first and then polls for."""
    epochs = [m for m in job.metrics if isinstance(m, dict)]
    series: dict[str, list[Any]] = {"epoch": [m.get("epoch", i + 1) for i, m in enumerate(epochs)]}
    for name in ("loss", "accuracy"):
        series[name] = [m.get(name) if isinstance(m.get(name), int | float) else None for m in epochs]
    return {"state": job.state, "reason": job.reason, "terminal": job.state.is_terminal, **series}


def rank_logs(job: Job, root: Path | None = None) -> list[tuple[int, list[str]]]:
    if not job.slurm_job_id:
        return []
    ranks = min(job.nodes * job.tasks_per_node, MAX_RANK_LOGS)
    return [(r, tail(rank_log(job, r), LOG_LINES, root)) for r in range(ranks)]


def admin_page(session: Session, config: GatewayConfig) -> dict[str, Any]:
    counts = counts_by_team(session)
    now = utcnow()
    per_minute = []
    for minutes_ago in range(10, 0, -1):
        start, end = now - timedelta(minutes=minutes_ago), now - timedelta(minutes=minutes_ago - 1)
        n = session.exec(
            select(func.count()).select_from(Job).where(Job.submit_time >= start, Job.submit_time < end)
        ).one()
        per_minute.append((end.strftime("%H:%M"), n))
    teams = []
    for name in config.teams:
        own = counts.get(name, {})
        failed = sum(own.get(state.value, 0) for state in FAILED_STATES)
        teams.append({"name": name, "counts": own, "failed": failed, "quota": quota(session, config, name, own)})
    return {"teams": teams, "per_minute": per_minute}


def _last_metrics(session: Session) -> Any:
    """The last epoch's metrics as JSON text, extracted by the database: decoding every epoch of 1,000 tasks
    in Python is most of a sweep page's time."""
    if session.get_bind().dialect.name == "postgresql":
        return cast(col(Job.metrics).op("->")(-1), String)
    return func.json_extract(col(Job.metrics), "$[#-1]")


def sweep_page(session: Session, sweep: Sweep, metric: str, mode: str) -> dict[str, Any]:
    """Every task's latest attempt (a retry-failed makes a new one), its parameters and last metrics, and the
    best task by ``metric`` (highest for mode max, lowest for min)."""
    columns = [col(c) for c in (Job.task_index, Job.id, Job.attempt, Job.state, Job.slurm_job_id, Job.parameters)]
    query = sa_select(*columns, _last_metrics(session)).where(col(Job.sweep_id) == sweep.id)
    latest: dict[int, dict[str, Any]] = {}
    for index, job_id, attempt, state, slurm_id, params, last in session.execute(query):
        if index is None or (index in latest and latest[index]["attempt"] > attempt):
            continue
        final = json.loads(last) if isinstance(last, str) else None
        value = final.get(metric) if isinstance(final, dict) else None
        latest[index] = {
            "index": index,
            "job_id": job_id,
            "attempt": attempt,
            "state": state,
            "slurm_job_id": slurm_id,
            "params": params,
            "value": value if isinstance(value, int | float) and not isinstance(value, bool) else None,
        }
    tasks = [latest[i] for i in sorted(latest)]
    scored = [t for t in tasks if t["value"] is not None]
    best = (max if mode == "max" else min)(scored, key=lambda t: t["value"]) if scored else None
    counts: dict[str, int] = defaultdict(int)
    for task in tasks:
        counts[task["state"]] += 1
    values: dict[str, set[str]] = defaultdict(set)
    for task in tasks:
        for name, value in task["params"].items():
            values[name].add(value)
    names = sorted(name for name, seen in values.items() if len(seen) > 1)  # what the sweep varies, charted
    fixed = {name: next(iter(seen)) for name, seen in sorted(values.items()) if len(seen) == 1}
    return {"sweep": sweep, "tasks": tasks, "best": best, "counts": dict(counts), "names": names, "fixed": fixed}
