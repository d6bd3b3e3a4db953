"""/v1/sweeps: parameter sweeps as Slurm job arrays. Each task is also a job (/v1/jobs/{id})."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from gateway.api.deps import ConfigDep, LimiterDep, PrincipalDep, ReleasingRoute, SessionDep, SweepIdPath, WorkerDep
from gateway.api.problems import AUTHENTICATED, BODY, declare
from gateway.schemas import SweepCreate, SweepPublic
from gateway.submit.job_requests import request_cancel
from gateway.submit.sweeps import (
    create_sweep,
    failed_tasks,
    get_visible_sweep,
    latest_tasks,
    retry_failed,
    sweep_size,
    to_public,
)

router = APIRouter(prefix="/v1/sweeps", tags=["sweeps"], route_class=ReleasingRoute)


@router.post(
    "",
    response_model=SweepPublic,
    status_code=status.HTTP_201_CREATED,
    responses=declare(*AUTHENTICATED, *BODY, 403, 429),
)
def submit_sweep(
    body: SweepCreate,
    session: SessionDep,
    config: ConfigDep,
    principal: PrincipalDep,
    worker: WorkerDep,
    limiter: LimiterDep,
) -> SweepPublic:
    # a sweep of N tasks costs N submissions
    limiter.admit(principal.user, principal.team_of(body.base.team), cost=sweep_size(body.space))
    sweep = create_sweep(session, config, principal, body, worker.partition_sizes)
    worker.wake()
    return to_public(session, sweep)


@router.get("/{sweep_id:hexid}", response_model=SweepPublic, responses=declare(*AUTHENTICATED, 404))
def get_sweep(
    sweep_id: SweepIdPath,
    session: SessionDep,
    principal: PrincipalDep,
    best: Annotated[
        str | None, Query(pattern=r"^[^:]{1,64}:(max|min)$", description="METRIC:max or METRIC:min")
    ] = None,
) -> SweepPublic:
    """Per-task states, counts by state, and with ``?best=METRIC:max|min`` the best task by its last metrics."""
    return to_public(session, get_visible_sweep(session, principal, sweep_id), best=best)


@router.post("/{sweep_id:hexid}/cancel", response_model=SweepPublic, responses=declare(*AUTHENTICATED, 404))
def cancel_sweep(sweep_id: SweepIdPath, session: SessionDep, principal: PrincipalDep, worker: WorkerDep) -> SweepPublic:
    sweep = get_visible_sweep(session, principal, sweep_id)
    for job in latest_tasks(session, sweep).values():
        request_cancel(session, job, principal.user)
    session.commit()
    worker.wake()
    return to_public(session, sweep)


@router.post(
    "/{sweep_id:hexid}/retry-failed", response_model=SweepPublic, responses=declare(*AUTHENTICATED, 403, 404, 409, 429)
)
def retry_failed_tasks(
    sweep_id: SweepIdPath,
    session: SessionDep,
    config: ConfigDep,
    principal: PrincipalDep,
    worker: WorkerDep,
    limiter: LimiterDep,
) -> SweepPublic:
    """Resubmit only the tasks whose latest attempt failed, as one new array linked to the sweep."""
    sweep = get_visible_sweep(session, principal, sweep_id)
    failed = failed_tasks(session, sweep)
    limiter.admit(principal.user, sweep.team, cost=max(1, len(failed)))
    retry_failed(session, config, sweep, failed)
    worker.wake()
    return to_public(session, sweep)
