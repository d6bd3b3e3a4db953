"""/v1/sweeps: parameter sweeps as Slurm job arrays. Each task is also a job (/v1/jobs/{id})."""

from __future__ import annotations

from fastapi import APIRouter, status

from gateway.api.deps import ConfigDep, PrincipalDep, SessionDep, WorkerDep
from gateway.jobs import request_cancel
from gateway.schemas import SweepCreate, SweepPublic
from gateway.sweeps import create_sweep, get_visible_sweep, latest_tasks, retry_failed, to_public

router = APIRouter(prefix="/v1/sweeps", tags=["sweeps"])


@router.post("", response_model=SweepPublic, status_code=status.HTTP_201_CREATED)
def submit_sweep(
    body: SweepCreate, session: SessionDep, config: ConfigDep, principal: PrincipalDep, worker: WorkerDep
) -> SweepPublic:
    sweep = create_sweep(session, config, principal, body, worker.partition_sizes)
    worker.wake()
    return to_public(session, sweep)


@router.get("/{sweep_id}", response_model=SweepPublic)
def get_sweep(sweep_id: str, session: SessionDep, principal: PrincipalDep, best: str | None = None) -> SweepPublic:
    """Per-task states, counts by state, and with ``?best=METRIC:max|min`` the best task by its last metrics."""
    return to_public(session, get_visible_sweep(session, principal, sweep_id), best=best)


@router.post("/{sweep_id}/cancel", response_model=SweepPublic)
def cancel_sweep(sweep_id: str, session: SessionDep, principal: PrincipalDep, worker: WorkerDep) -> SweepPublic:
    sweep = get_visible_sweep(session, principal, sweep_id)
    for job in latest_tasks(session, sweep).values():
        request_cancel(session, job, principal.user)
    session.commit()
    worker.wake()
    return to_public(session, sweep)


@router.post("/{sweep_id}/retry-failed", response_model=SweepPublic)
def retry_failed_tasks(
    sweep_id: str, session: SessionDep, config: ConfigDep, principal: PrincipalDep, worker: WorkerDep
) -> SweepPublic:
    """Resubmit only the tasks whose latest attempt failed, as one new array linked to the sweep."""
    sweep = get_visible_sweep(session, principal, sweep_id)
    retry_failed(session, config, principal, sweep)
    worker.wake()
    return to_public(session, sweep)
