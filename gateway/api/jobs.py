"""/v1/jobs: submit, list, inspect, cancel, logs, metrics, rerun. Reads the database; never calls Slurm."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query, Response, status
from sqlalchemy import func
from sqlmodel import col, select

from gateway.api.deps import (
    ConfigDep,
    IntakeDep,
    JobIdPath,
    LimiterDep,
    PrincipalDep,
    ReleasingRoute,
    SessionDep,
    WorkerDep,
)
from gateway.api.joblogs import rank_log, tail
from gateway.api.problems import AUTHENTICATED, BODY, DATABASE_RETRY_AFTER_S, declare
from gateway.errors import ConflictError, GatewayError, InvalidRequestError
from gateway.schemas import (
    AttemptPublic,
    ErrorBody,
    JobBatchCreate,
    JobBatchItem,
    JobBatchResult,
    JobCreate,
    JobList,
    JobPublic,
    LogTail,
    MetricsPublic,
    RerunRequest,
    Verification,
)
from gateway.store.models import Job, JobAttempt
from gateway.submit.intake import Submission, create_job
from gateway.submit.job_requests import (
    get_visible_job,
    preview_job,
    request_cancel,
    rerun_request,
    to_public,
)
from gateway.submit.reruns import verify
from gateway.submit.specs import job_spec
from launchers.states import JobState
from launchers.submission import render_script

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], route_class=ReleasingRoute)
MAX_LOG_LINES = 10_000
MAX_OFFSET = 1_000_000_000  # far beyond any listing; bounded so that no integer overflows the database's


@router.post(
    "",
    response_model=JobPublic,
    status_code=status.HTTP_201_CREATED,
    responses=declare(
        *AUTHENTICATED,
        *BODY,
        429,
        also={200: {"model": JobPublic, "description": "The job this idempotency key made."}},
    ),
)
async def submit_job(
    body: JobCreate,
    principal: PrincipalDep,
    worker: WorkerDep,
    limiter: LimiterDep,
    intake: IntakeDep,
    response: Response,
) -> Response:
    """Stored by the process's intake, in a group with the requests that arrived beside it (gateway.submit.intake);
    answered once its row is committed."""
    limiter.admit(principal.user, principal.team_of(body.team))
    [outcome] = await intake.submit([Submission(principal, body, worker.partition_sizes)])
    if isinstance(outcome, Exception):
        raise outcome
    public = answer_created(outcome.job, outcome.created, worker, response)
    # Serialised here, once: handed a model, FastAPI validates it again against response_model first (~5 % of
    # the request's CPU in the intake's profile). The documented schema is still response_model's.
    return Response(public.model_dump_json(), status_code=response.status_code, media_type="application/json")


@router.post("/batch", response_model=JobBatchResult, responses=declare(*AUTHENTICATED, *BODY))
async def submit_jobs(
    body: JobBatchCreate, principal: PrincipalDep, worker: WorkerDep, limiter: LimiterDep, intake: IntakeDep
) -> Response:
    """Up to MAX_BATCH jobs in one request, stored in one transaction: what lets one client put thousands of
    jobs a second into the gateway (and the worker, into Slurm as arrays). Each job is answered as if POSTed
    alone, at its index, and counts against the rate limits as one submission; one job's 422 or 429 does not
    refuse the others. A database that does not answer refuses the whole request (503, nothing written)."""
    items: list[Submission] = []
    refused: dict[int, GatewayError] = {}
    for index, request in enumerate(body.jobs):
        try:
            limiter.admit(principal.user, principal.team_of(request.team))
        except GatewayError as exc:
            refused[index] = exc
            continue
        items.append(Submission(principal, request, worker.partition_sizes))
    outcomes = await intake.submit(items) if items else []
    failed = [o for o in outcomes if isinstance(o, Exception) and not isinstance(o, GatewayError)]
    if failed and len(failed) == len(outcomes):
        raise failed[0]  # the database's, for every job: none of them was written
    stored = iter(outcomes)
    answers: list[JobBatchItem] = []
    for index in range(len(body.jobs)):
        outcome = refused.get(index) or next(stored)
        if isinstance(outcome, Exception):
            # a database error for some jobs only (after an idempotency-key race, each was stored on its own)
            answers.append(_refusal(outcome))
        else:
            code = status.HTTP_201_CREATED if outcome.created else status.HTTP_200_OK
            answers.append(JobBatchItem(status=code, job=outcome.job))
    created = sum(answer.status == status.HTTP_201_CREATED for answer in answers)
    if created:
        worker.wake()
    return Response(JobBatchResult(items=answers, created=created).model_dump_json(), media_type="application/json")


def _refusal(exc: Exception) -> JobBatchItem:
    """A batch's refused job: its own error (422, 429), or the database's for it alone (after an idempotency-key
    race, the intake stores each job of the group on its own)."""
    if isinstance(exc, GatewayError):
        error = ErrorBody(detail=exc.detail, field=exc.field)
        return JobBatchItem(status=exc.status_code, error=error, retry_after_s=exc.retry_after_s)
    error = ErrorBody(detail="the database did not answer; this job was not written, try again")
    return JobBatchItem(status=503, error=error, retry_after_s=DATABASE_RETRY_AFTER_S)


def answer_created(job: JobPublic, created: bool, worker: WorkerDep, response: Response) -> JobPublic:
    """201 and the worker woken for a new job; 200 for the one an earlier request's idempotency key made."""
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    if created:
        worker.wake()
    return job


@router.post("/render", responses=declare(*AUTHENTICATED, *BODY))
def render_job(
    body: JobCreate, session: SessionDep, config: ConfigDep, principal: PrincipalDep, worker: WorkerDep
) -> dict[str, str]:
    """Dry run: the exact job script this request would produce. Nothing is stored or submitted."""
    job = preview_job(session, config, principal, body, worker.partition_sizes)
    return {"job_id": job.id, "script": render_script(job_spec(config, job))}


@router.get("", response_model=JobList, responses=declare(*AUTHENTICATED))
def list_jobs(
    session: SessionDep,
    principal: PrincipalDep,
    team: Annotated[str | None, Query(pattern=r"^[a-z][a-z0-9_-]{0,31}$")] = None,
    state: JobState | None = None,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> JobList:
    query = select(Job)
    if not principal.admin:
        query = query.where(Job.team == principal.team)
    if team is not None:
        query = query.where(Job.team == team)
    if state is not None:
        query = query.where(Job.state == state)
    total = session.exec(select(func.count()).select_from(query.subquery())).one()
    rows = session.exec(query.order_by(col(Job.submit_time).desc(), col(Job.id)).offset(offset).limit(limit)).all()
    return JobList(items=[to_public(j) for j in rows], total=total, offset=offset, limit=limit)


@router.get("/{job_id:hexid}", response_model=JobPublic, responses=declare(*AUTHENTICATED, 404, 409))
def get_job(job_id: JobIdPath, session: SessionDep, principal: PrincipalDep) -> JobPublic:
    return to_public(get_visible_job(session, principal, job_id))


@router.post("/{job_id:hexid}/cancel", response_model=JobPublic, responses=declare(*AUTHENTICATED, 404, 409))
def cancel_job(job_id: JobIdPath, session: SessionDep, principal: PrincipalDep, worker: WorkerDep) -> JobPublic:
    job = get_visible_job(session, principal, job_id)
    if job.state.is_terminal:
        raise ConflictError(f"job {job_id} already {job.state}")
    request_cancel(session, job, principal.user)
    session.commit()
    worker.wake()
    return to_public(job)


@router.get("/{job_id:hexid}/attempts", response_model=list[AttemptPublic], responses=declare(*AUTHENTICATED, 404, 409))
def job_attempts(job_id: JobIdPath, session: SessionDep, principal: PrincipalDep) -> list[AttemptPublic]:
    """Each run of the job in Slurm, first to last: a node failure or preemption that Slurm requeued shows
    as a run that ended (with its nodes and state) followed by the next."""
    job = get_visible_job(session, principal, job_id)
    rows = session.exec(select(JobAttempt).where(JobAttempt.job_id == job.id).order_by(col(JobAttempt.number)))
    return [AttemptPublic.model_validate(row, from_attributes=True) for row in rows]


@router.get("/{job_id:hexid}/logs", response_model=list[LogTail], responses=declare(*AUTHENTICATED, 404, 409))
def job_logs(
    job_id: JobIdPath,
    session: SessionDep,
    config: ConfigDep,
    principal: PrincipalDep,
    rank: Annotated[int | None, Query(ge=0, le=100_000)] = None,
    lines: Annotated[int, Query(ge=1, le=MAX_LOG_LINES)] = 100,
) -> list[LogTail]:
    job = get_visible_job(session, principal, job_id)
    ranks = [rank] if rank is not None else list(range(job.nodes * job.tasks_per_node))
    if rank is not None and rank >= job.nodes * job.tasks_per_node:
        raise InvalidRequestError(f"rank {rank} outside 0..{job.nodes * job.tasks_per_node - 1}", field="rank")
    tails = []
    for r in ranks:
        path = rank_log(job, r)
        found = tail(path, lines, config.job_root) if job.slurm_job_id else []  # never through a link
        tails.append(LogTail(rank=r, path=str(path), lines=found))
    return tails


@router.get("/{job_id:hexid}/metrics", response_model=MetricsPublic, responses=declare(*AUTHENTICATED, 404, 409))
def job_metrics(job_id: JobIdPath, session: SessionDep, principal: PrincipalDep) -> MetricsPublic:
    job = get_visible_job(session, principal, job_id)
    return MetricsPublic(
        job_id=job.id,
        epochs=job.metrics,
        state=job.state,
        best_epoch=job.best_epoch,
        health_reason=job.health_reason,
    )


@router.post(
    "/{job_id:hexid}/rerun",
    response_model=JobPublic,
    status_code=status.HTTP_201_CREATED,
    responses=declare(*AUTHENTICATED, *BODY, 404, 409, 429),
)
def rerun_job(
    job_id: JobIdPath,
    session: SessionDep,
    config: ConfigDep,
    principal: PrincipalDep,
    worker: WorkerDep,
    limiter: LimiterDep,
    body: Annotated[RerunRequest | None, Body()] = None,
) -> JobPublic:
    """The recorded inputs again (algorithm version, dataset version, parameters, seed, policy). With
    ``verify``, ``GET …/verification`` on the new job compares the two models once it has ended."""
    original = get_visible_job(session, principal, job_id)
    limiter.admit(principal.user, original.team)
    options = body or RerunRequest()
    if options.verify and original.state != JobState.SUCCEEDED:
        raise ConflictError(f"job {job_id} is {original.state}: only a succeeded job's model can be verified")
    request = rerun_request(original, options.resource_changes())
    if not principal.admin:
        request.team = None
    job, _ = create_job(
        session, config, principal, request, worker.partition_sizes, rerun_of=original.id, verify=options.verify
    )
    worker.wake()
    return job


@router.get("/{job_id:hexid}/verification", response_model=Verification, responses=declare(*AUTHENTICATED, 404, 409))
def job_verification(job_id: JobIdPath, session: SessionDep, principal: PrincipalDep) -> Verification:
    """A rerun's model against its original's, and every recorded input that differs between the two runs."""
    rerun = get_visible_job(session, principal, job_id)
    if rerun.rerun_of is None:
        raise ConflictError(f"job {job_id} is not a rerun: there is nothing to compare it with")
    original = get_visible_job(session, principal, rerun.rerun_of)
    return verify(original, rerun)
