"""Python functions as jobs, through the gateway (``POST /v1/functions``, ``Client.submit_function``).

The client pickles ``(function, args, kwargs)``; the gateway checks the site allows it, stores the bytes in the
job's folder and runs the job as the token's user, like any other. It never unpickles the payload, nor the
outcomes the ranks write back (``GET /v1/jobs/{id}/outcome`` hands them over as bytes): only the job, as its
user, and the client that sent the function run that code. docs/functions.md has the reasoning.
"""

from __future__ import annotations

import hashlib
import os

from sqlmodel import Session

from gateway.config import GatewayConfig
from gateway.errors import ForbiddenError
from gateway.run_health import resolve as resolve_health
from gateway.schemas import FunctionCreate
from gateway.site.auth import Principal
from gateway.site.folders import JobFolders
from gateway.store import rows
from gateway.store.models import Job
from gateway.submit.admission import check_backlog, idempotent_job
from gateway.submit.images import image_digest
from gateway.submit.job_requests import (
    FUNCTION_ALGORITHM,
    check_resources,
    new_values,
    resolve_partition,
    resolve_team,
    store_new,
)
from gateway.submit.specs import payload_path
from launchers.runtime.element import write_new_file
from launchers.runtime.function import function_command
from launchers.slurm.sinfo import PartitionSize


def check_allowed(config: GatewayConfig, team: str) -> None:
    allowed = config.functions
    if not allowed.enabled:
        raise ForbiddenError("this gateway does not run Python functions (functions.enabled is off)")
    if allowed.teams is not None and team not in allowed.teams:
        raise ForbiddenError(f"team {team} may not run Python functions on this gateway (functions.teams)")


def create_function_job(
    session: Session,
    config: GatewayConfig,
    principal: Principal,
    request: FunctionCreate,
    partition_sizes: dict[str, PartitionSize],
) -> tuple[Job, bool]:
    """Store the function job as ``accepted``, its payload beside it. Returns (job, created)."""
    team_name, team = resolve_team(config, principal, request.team)
    check_allowed(config, team_name)
    existing = idempotent_job(session, team_name, principal.user, request.idempotency_key)
    if existing is not None:
        return existing, False
    partition = resolve_partition(team_name, team, request.partition)
    check_resources(team_name, team, request, partition, partition_sizes)
    check_backlog(config, team_name, rows.backlog(session.connection(), team_name))
    values = new_values(
        config,
        team_name,
        principal.user,
        request.name,
        partition,
        request.resources(),
        algorithm=FUNCTION_ALGORITHM,
        algorithm_version=hashlib.sha256(request.payload).hexdigest()[:16],  # which function, for the record
        image=config.functions.image or "",
        # The site's function image, pinned per job like an algorithm version's: one rebuilt while the job waits
        # fails it at dispatch; the next submission pins the new file (the configuration names it, nobody else).
        image_digest=image_digest(config, config.functions.image) if config.functions.image else None,
        command=[],
        framework=request.framework,
        dataset_id="",
        train_data_version_hash="",
        parameters={},
        idempotency_key=request.idempotency_key,
        requeue=request.requeue,
        health=resolve_health(team.health, None).model_dump(),
    )
    job = Job(**values)
    job.command = function_command(payload_path(job))
    with JobFolders(config) as folders:  # the gateway's alone until dispatch gives the job's user its rights
        folder = folders.private(team_name, job.folder)
        try:
            write_new_file(
                payload_path(job).name, request.payload, dir_fd=folder
            )  # bytes only: the gateway never loads it
        finally:
            os.close(folder)
    store_new(session, job)
    return job, True
