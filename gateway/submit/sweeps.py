"""Sweeps: a base request times a parameter space, stored as one job per task before anything reaches Slurm."""

from __future__ import annotations

import math
from typing import Any

from sqlmodel import Session, col, select

from gateway.config import GatewayConfig
from gateway.errors import InvalidRequestError, NotFoundError
from gateway.schemas import SweepCreate, SweepPublic, SweepTask, validate_parameters
from gateway.site.auth import Principal
from gateway.store.models import Job, JobEvent, JobFields, Sweep
from gateway.submit.admission import check_tasks
from gateway.submit.images import check_image
from gateway.submit.job_requests import check_local_commands, check_request, job_values, resolve_team
from launchers.resources import RESOURCE_FIELDS
from launchers.slurm.sinfo import PartitionSize
from launchers.space import GridSpace, ListSpace, ParameterSpace
from launchers.states import FAILED_STATES
from launchers.sweeps import as_env

MAX_SWEEP_TASKS = 10_000  # tasks of one sweep at most, whatever a team's max_queued_jobs


def create_sweep(
    session: Session,
    config: GatewayConfig,
    principal: Principal,
    body: SweepCreate,
    partition_sizes: dict[str, PartitionSize],
) -> Sweep:
    team_name, team = resolve_team(config, principal, body.base.team)
    if body.max_parallel > team.max_running_jobs:
        raise InvalidRequestError(
            f"max_parallel {body.max_parallel} exceeds team {team_name}'s max_running_jobs {team.max_running_jobs}",
            field="max_parallel",
        )
    base = body.base
    version, partition = check_request(session.connection(), config, team_name, base, partition_sizes)
    check_tasks(session, config, team_name, sweep_size(body.space))  # before a single point is made
    points = body.space.points()
    merged = []
    for point in points:
        try:
            merged.append(validate_parameters({**base.parameters, **as_env(point)}))
        except ValueError as exc:
            raise InvalidRequestError(str(exc), field="space") from None
    sweep = Sweep(
        name=body.name,
        team=team_name,
        user=principal.user,
        max_parallel=body.max_parallel,
        space=body.space.model_dump(by_alias=True),
        task_count=len(points),
    )
    session.add(sweep)
    session.flush()
    for index, params in enumerate(merged):
        job = Job(**job_values(config, team_name, principal.user, base, version, partition, parameters=params))
        job.idempotency_key = None
        _make_task(config, job, sweep, index, attempt=0)
        session.add(job)
        session.add(JobEvent(job_id=job.id, state=job.state))
    session.commit()
    return sweep


def sweep_size(space: ParameterSpace) -> int:
    """The tasks a space makes, without making them (a grid's product, a list's length, a sample's n); above
    MAX_SWEEP_TASKS, whatever the team's limits, a 422."""
    if isinstance(space, GridSpace):
        size = math.prod(len(values) for values in space.grid.values())
    else:
        size = len(space.points_) if isinstance(space, ListSpace) else space.n
    if size > MAX_SWEEP_TASKS:
        raise InvalidRequestError(f"the space has {size} points, more than {MAX_SWEEP_TASKS}", field="space")
    return size


def failed_tasks(session: Session, sweep: Sweep) -> list[Job]:
    """The tasks whose latest attempt failed: what a retry would make again."""
    return [job for job in latest_tasks(session, sweep).values() if job.state in FAILED_STATES]


def retry_failed(session: Session, config: GatewayConfig, sweep: Sweep, failed: list[Job]) -> list[Job]:
    """New jobs for ``failed`` (failed_tasks); the worker submits them as one new array. Each keeps what its
    task ran (the pinned version's command, never the algorithm's current one) and its task's user: a teammate's
    or an admin's retry never runs one user's chosen code as another."""
    if failed:
        check_tasks(session, config, sweep.team, len(failed))
        if config.container_runtime == "none":
            check_local_commands(config, sweep.team)
        for image, digest, algorithm, version in {
            (j.image, j.image_digest, j.algorithm, j.algorithm_version) for j in failed
        }:
            check_image(config, image, digest, algorithm, version, advice=RETRY_ADVICE)
    retries = []
    for old in failed:
        job = Job(**old.model_dump(include=RETRY_FIELDS), team=old.team, user=old.user, folder="")
        job.rerun_of = old.id
        _make_task(config, job, sweep, old.task_index or 0, attempt=old.attempt + 1)
        session.add(job)
        session.add(JobEvent(job_id=job.id, state=job.state))
        retries.append(job)
    session.commit()
    return retries


RETRY_ADVICE = "a retry runs the image its tasks ran: put that file back, or submit the sweep again"
# A retry runs what its task ran, where it ran, with the same resources.
RETRY_FIELDS = {"name", *JobFields.PLACEMENT, *RESOURCE_FIELDS, *JobFields.SCRIPT_INPUTS, *JobFields.PER_JOB_INPUTS}


def _make_task(config: GatewayConfig, job: Job, sweep: Sweep, index: int, attempt: int) -> None:
    root = config.job_root / sweep.team / f"sweep-{sweep.id}"
    job.sweep_id, job.task_index, job.attempt = sweep.id, index, attempt
    job.folder = str(root / "tasks" / f"{index}.{attempt}")
    job.submit_folder = str(root / f"array.{attempt}")  # one submitit folder per array: logs are %A_%a_%t
    job.name = f"{sweep.name}[{index}]"


def get_visible_sweep(session: Session, principal: Principal, sweep_id: str) -> Sweep:
    sweep = session.get(Sweep, sweep_id)
    if sweep is None or not principal.can_see(sweep.team):
        raise NotFoundError(f"sweep {sweep_id} not found")
    return sweep


def latest_tasks(session: Session, sweep: Sweep) -> dict[int, Job]:
    latest: dict[int, Job] = {}
    for job in session.exec(select(Job).where(Job.sweep_id == sweep.id).order_by(col(Job.attempt))):
        latest[job.task_index or 0] = job
    return latest


def to_public(session: Session, sweep: Sweep, best: str | None = None) -> SweepPublic:
    tasks = [
        SweepTask(
            index=i,
            job_id=j.id,
            attempt=j.attempt,
            state=j.state,
            slurm_job_id=j.slurm_job_id,
            exit_code=j.exit_code,
            parameters=j.parameters,
            final_metrics=j.metrics[-1] if j.metrics else None,
        )
        for i, j in sorted(latest_tasks(session, sweep).items())
    ]
    counts: dict[str, int] = {}
    for task in tasks:
        counts[task.state.value] = counts.get(task.state.value, 0) + 1
    public = SweepPublic(
        id=sweep.id,
        name=sweep.name,
        team=sweep.team,
        user=sweep.user,
        max_parallel=sweep.max_parallel,
        task_count=sweep.task_count,
        array_ids=sweep.array_ids,
        counts=counts,
        tasks=tasks,
    )
    if best:
        public.best = best_task(tasks, best)
    return public


def best_task(tasks: list[SweepTask], spec: str) -> SweepTask | None:
    """``accuracy:max`` / ``loss:min`` over each task's last metrics line."""
    metric, _, direction = spec.partition(":")
    if direction not in ("max", "min") or not metric:
        raise InvalidRequestError("best must look like METRIC:max or METRIC:min", field="best")
    scored: list[tuple[Any, SweepTask]] = [
        (t.final_metrics[metric], t)
        for t in tasks
        if t.final_metrics and isinstance(t.final_metrics.get(metric), int | float)
    ]
    if not scored:
        return None
    pick = max if direction == "max" else min
    return pick(scored, key=lambda pair: pair[0])[1]
