"""/v1/functions: a Python function as a job (where the site allows it), and each rank's outcome as bytes.

The outcome is the job's own pickle; the gateway hands it to a caller of the job's team, who sent the function
and unpickles it. The gateway itself never does (gateway.submit.functions)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from fastapi.responses import StreamingResponse

from gateway.api.deps import ConfigDep, JobIdPath, LimiterDep, PrincipalDep, ReleasingRoute, SessionDep, WorkerDep
from gateway.api.jobs import answer_created
from gateway.api.problems import AUTHENTICATED, BODY, declare
from gateway.errors import ConflictError, InvalidRequestError, NotFoundError
from gateway.schemas import FunctionCreate, JobPublic
from gateway.submit.functions import create_function_job
from gateway.submit.job_requests import FUNCTION_ALGORITHM, get_visible_job, to_public
from launchers.files import NotARegularFileError, stream_job_bytes
from launchers.runtime.function import outcome_path

router = APIRouter(tags=["functions"], route_class=ReleasingRoute)
MAX_OUTCOME_BYTES = 256 << 20
OCTETS = {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}


@router.post(
    "/v1/functions",
    response_model=JobPublic,
    status_code=status.HTTP_201_CREATED,
    responses=declare(
        *AUTHENTICATED,
        *BODY,
        403,
        429,
        also={200: {"model": JobPublic, "description": "The job this idempotency key made."}},
    ),
)
def submit_function(
    body: FunctionCreate,
    session: SessionDep,
    config: ConfigDep,
    principal: PrincipalDep,
    worker: WorkerDep,
    limiter: LimiterDep,
    response: Response,
) -> JobPublic:
    """Every rank of the job calls the function, as the token's user, with Horovod or torch.distributed set up."""
    limiter.admit(principal.user, principal.team_of(body.team))
    job, created = create_function_job(session, config, principal, body, worker.partition_sizes)
    return answer_created(to_public(job), created, worker, response)


@router.get(
    "/v1/jobs/{job_id:hexid}/outcome",
    response_class=Response,
    responses=declare(*AUTHENTICATED, 404, 409, also={200: {"description": "cloudpickle bytes", **OCTETS}}),
)
def function_outcome(
    job_id: JobIdPath,
    session: SessionDep,
    config: ConfigDep,
    principal: PrincipalDep,
    rank: Annotated[int, Query(ge=0, le=100_000)] = 0,
) -> Response:
    """One rank's outcome (its return value, or its exception and traceback), as the rank wrote it; 404 until
    that rank has one."""
    job = get_visible_job(session, principal, job_id)
    if job.algorithm != FUNCTION_ALGORITHM:
        raise ConflictError(f"job {job.id} runs a trainer, not a function: it has no outcome")
    if rank >= job.nodes * job.tasks_per_node:
        raise InvalidRequestError(f"rank {rank} outside 0..{job.nodes * job.tasks_per_node - 1}", field="rank")
    if not job.slurm_job_id:
        raise NotFoundError(f"rank {rank} of job {job.id} has no outcome (yet)")
    path = outcome_path(Path(job.submit_folder), job.slurm_job_id, rank)
    try:  # the rank's own file: never through a link, a regular file only, the bytes really read bounded
        chunks = stream_job_bytes(path, MAX_OUTCOME_BYTES, root=config.job_root)
    except FileNotFoundError:
        raise NotFoundError(f"rank {rank} of job {job.id} has no outcome (yet)") from None
    except NotARegularFileError:
        raise ConflictError(
            f"rank {rank}'s outcome is not a regular file of at most {MAX_OUTCOME_BYTES >> 20} MiB; read {path}"
        ) from None
    except OSError:
        raise NotFoundError(f"rank {rank} of job {job.id} has no readable outcome") from None
    return StreamingResponse(chunks, media_type="application/octet-stream")  # never a whole pickle in memory
