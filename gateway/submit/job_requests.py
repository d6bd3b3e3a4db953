"""Turning a training request into a stored job, and a stored job into a launcher spec.

Everything a request names is resolved and checked here, at submission, so that what reaches Slurm later
can run: the algorithm's image, the dataset's directory, the team's partition and limits.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Connection, CursorResult, func, update
from sqlmodel import Session, col, select

from gateway.config import GatewayConfig, TeamConfig
from gateway.errors import ConflictError, ForbiddenError, InvalidRequestError, NotFoundError
from gateway.run_health import HealthOverrides, HealthPolicy
from gateway.run_health import resolve as resolve_health
from gateway.schemas import JobCreate, JobPublic, validate_parameters
from gateway.site.auth import Principal
from gateway.store import rows
from gateway.store.models import ID_LENGTH, PUBLISHED, Algorithm, Job, JobEvent, new_id, utcnow
from gateway.store.rows import Version, find_version, insert_jobs, values_of
from gateway.submit.images import check_image
from launchers.errors import SpecError
from launchers.resources import RESOURCE_FIELDS, Resources, check_fit
from launchers.slurm.sinfo import PartitionSize
from launchers.states import JobState

ACTIVE_IN_SLURM = (
    JobState.QUEUED,
    JobState.REQUEUED,
    JobState.LAUNCHING,
    JobState.RUNNING,
    JobState.UNKNOWN,  # Slurm holds it in a state the table lacks: still tracked, still counted
)
MIN_PREFIX = 4  # the shortest id prefix taken for a job id
FUNCTION_ALGORITHM = "python-function"  # what a function job (POST /v1/functions) has for an algorithm


def resolve_team(config: GatewayConfig, principal: Principal, requested: str | None) -> tuple[str, TeamConfig]:
    """The one place a request's team is decided (jobs, batches, sweeps, functions, an algorithm's owner): the
    principal's own, or the existing team an admin names."""
    if requested is not None and requested != principal.team and not principal.admin:
        raise InvalidRequestError("only an admin token may name a team", field="team")
    name = principal.team_of(requested) or principal.team
    if name is None:
        raise InvalidRequestError("an admin token must name the team", field="team")
    if name not in config.teams:
        raise InvalidRequestError(f"unknown team {name!r}", field="team")
    return name, config.teams[name]


def resolve_version(
    connection: Connection,
    team: str,
    name: str,
    version: str | None,
    known: dict[tuple[str, str, str | None], Version] | None = None,
) -> Version:
    """The algorithm version a request of ``team`` names (its current one when it names none), of the team's own
    algorithms or a published one: another team's is as unknown as one that does not exist, and its new versions
    never reach this team's jobs. ``known`` keeps what a group of requests already read."""
    if known is not None and (team, name, version) in known:
        return known[(team, name, version)]
    found = find_version(connection, name, version, team)
    if found is None:
        current = connection.execute(
            select(Algorithm.current_version).where(Algorithm.name == name, col(Algorithm.team).in_([team, PUBLISHED]))
        ).scalar()
        if current is None:
            raise InvalidRequestError(f"unknown algorithm {name!r}", field="algorithm")
        wanted = version or current
        raise InvalidRequestError(f"algorithm {name!r} has no version {wanted!r}", field="algorithm_version")
    if known is not None:
        known[(team, name, version)] = found
    return found


def dataset_path(config: GatewayConfig, dataset_id: str, version_hash: str) -> Path:
    path = config.dataset_root / dataset_id / version_hash
    if not path.is_dir():
        raise InvalidRequestError(
            f"dataset {dataset_id!r} has no version {version_hash!r}",
            field="train_data_version_hash" if (config.dataset_root / dataset_id).is_dir() else "dataset_id",
        )
    return path


def check_resources(
    team_name: str, team: TeamConfig, res: Resources, partition: str, partition_sizes: dict[str, PartitionSize]
) -> None:
    """Per-job limits: the team's, then the partition's (from the worker's last look at sinfo)."""
    if res.nodes > team.max_nodes:
        raise InvalidRequestError(
            f"{res.nodes} nodes exceed team {team_name}'s limit of {team.max_nodes}", field="nodes"
        )
    if res.gpus_per_node * res.nodes > team.max_gpus:
        raise InvalidRequestError(
            f"{res.gpus_per_node * res.nodes} GPUs exceed team {team_name}'s limit of {team.max_gpus}",
            field="gpus_per_node",
        )
    size = partition_sizes.get(partition)
    if size is None:
        return
    try:
        check_fit(res, partition, size)
    except SpecError as exc:
        raise InvalidRequestError(exc.message, field=exc.field) from None


def folders_of(config: GatewayConfig, team: str, job_id: str) -> tuple[str, str]:
    """The job's folder (model, metrics) in its team's, and submitit's folder inside it."""
    folder = config.job_root / team / job_id
    return str(folder), str(folder / "job")


def store_new(session: Session, job: Job) -> None:
    """Committed as ``accepted``, with the first event of its history, before anything reaches Slurm."""
    insert_jobs(session.connection(), [values_of(job)])
    session.commit()


def check_request(
    connection: Connection,
    config: GatewayConfig,
    team_name: str,
    request: JobCreate,
    partition_sizes: dict[str, PartitionSize],
    known_versions: dict[tuple[str, str, str | None], Version] | None = None,
) -> tuple[Version, str]:
    """Everything a request names must exist and fit: algorithm version, dataset, partition, limits."""
    team = config.teams[team_name]
    partition = resolve_partition(team_name, team, request.partition)
    version = resolve_version(connection, team_name, request.algorithm, request.algorithm_version, known_versions)
    command_of(config, team_name, version)
    check_image(config, version.image, version.image_digest, version.algorithm, version.version)  # still pinned
    dataset_path(config, request.dataset_id, request.train_data_version_hash)
    check_resources(team_name, team, request, partition, partition_sizes)
    return version, partition


def preview_job(
    session: Session,
    config: GatewayConfig,
    principal: Principal,
    request: JobCreate,
    partition_sizes: dict[str, PartitionSize],
) -> Job:
    """The job a request would create, checked the same way, but not stored (for dry runs)."""
    team_name, _ = resolve_team(config, principal, request.team)
    version, partition = check_request(session.connection(), config, team_name, request, partition_sizes)
    return Job(**job_values(config, team_name, principal.user, request, version, partition))


def resolve_partition(team_name: str, team: TeamConfig, requested: str | None) -> str:
    partition = requested or team.partitions[0]
    if partition not in team.partitions:
        raise InvalidRequestError(f"partition {partition!r} is not one of team {team_name}'s", field="partition")
    return partition


def job_values(
    config: GatewayConfig,
    team_name: str,
    user: str,
    request: JobCreate,
    version: Version,
    partition: str,
    *,
    parameters: dict[str, str] | None = None,
    rerun_of: str | None = None,
) -> dict[str, Any]:
    """A new job's whole row, from a checked request, placed in its team's folder."""
    team = config.teams[team_name]
    return new_values(
        config,
        team_name,
        user,
        request.name,
        partition,
        request.resources(),
        algorithm=version.algorithm,
        algorithm_version=version.version,
        image=version.image,
        image_digest=version.image_digest,
        command=command_of(config, team_name, version),
        framework=version.framework,
        dataset_id=request.dataset_id,
        train_data_version_hash=request.train_data_version_hash,
        parameters=parameters if parameters is not None else validate_parameters(request.parameters),
        idempotency_key=request.idempotency_key,
        requeue=request.requeue,
        rerun_of=rerun_of,
        health=resolve_health(team.health, request.health).model_dump(),
    )


def command_of(config: GatewayConfig, team_name: str, version: Version) -> list[str]:
    """What the job runs: the version's command in its image, or without a container runtime its local_command,
    which runs outside any image as the job's user, so only where the site allows it ([algorithms])."""
    if config.container_runtime != "none":
        return list(version.command)
    if not version.local_command:
        raise InvalidRequestError(
            f"algorithm {version.algorithm} {version.version} has no local_command, and this gateway runs "
            "without a container runtime",
            field="algorithm_version",
        )
    check_local_commands(config, team_name)
    return list(version.local_command)


def check_local_commands(config: GatewayConfig, team_name: str) -> None:
    allowed = config.algorithms
    if not allowed.local_commands:
        raise ForbiddenError("this gateway runs no local commands (algorithms.local_commands is off)")
    if allowed.teams is not None and team_name not in allowed.teams:
        raise ForbiddenError(f"team {team_name} may not run local commands on this gateway (algorithms.teams)")


def new_values(
    config: GatewayConfig, team_name: str, user: str, name: str, partition: str, resources: Resources, **fields: Any
) -> dict[str, Any]:
    """A new job's row in its team's account and QoS and its team's folder; ``fields``: what it runs."""
    team = config.teams[team_name]
    now, job_id = utcnow(), new_id()
    folder, submit_folder = folders_of(config, team_name, job_id)
    return rows.new_values(
        id=job_id,
        submit_time=now,
        updated_at=now,
        metrics=[],
        name=name,
        team=team_name,
        user=user,
        partition=partition,
        account=team.account,
        qos=team.qos,
        folder=folder,
        submit_folder=submit_folder,
        **resources.model_dump(),
        **fields,
    )


def rerun_request(job: Job, resources: dict[str, Any] | None = None) -> JobCreate:
    """Exactly the recorded inputs: the same algorithm version, dataset version, parameters and resources. A sweep
    task's name (``sweep[3]``) is not a request's name: its brackets become ``sweep-3``."""
    if job.algorithm == FUNCTION_ALGORITHM:
        raise InvalidRequestError(f"job {job.id} ran a Python function: submit the function again", field="job_id")
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", job.name).strip("-_.")[:64] or "train"
    chosen = {**stored_resources(job).model_dump(), **(resources or {})}
    return JobCreate(
        name=name,
        team=job.team,
        algorithm=job.algorithm,
        algorithm_version=job.algorithm_version,
        dataset_id=job.dataset_id,
        train_data_version_hash=job.train_data_version_hash,
        parameters=dict(job.parameters),
        partition=job.partition,
        requeue=job.requeue,
        health=HealthOverrides.model_validate(job.health) if job.health else None,
        **chosen,
    )


# JobPublic's fields that a row holds as they are shown; the others are built from the row (to_public).
_DERIVED = frozenset({"resources", "health"})
_SHOWN = tuple(name for name in JobPublic.model_fields if name not in _DERIVED)


def to_public(job: Job | Mapping[str, Any]) -> JobPublic:
    """From a loaded row, or from the values a new one was inserted with (gateway.submit.intake: a mapping, not an
    ORM object, which costs 250 us to make): the response's fields are the row's, by name (JobPublic declares
    which), with its resources and health policy as objects."""
    values = _fields(job, (*_SHOWN, "health"))
    values["resources"] = stored_resources(job)
    values["health"] = HealthPolicy.model_validate(values["health"]) if values["health"] else None
    return JobPublic.model_validate(values)


def stored_resources(job: Job | Mapping[str, Any]) -> Resources:
    return Resources.model_validate(_fields(job, RESOURCE_FIELDS))


def _fields(job: Job | Mapping[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """A row's values by name, from the values it was written with or from the ORM object (its attributes, which
    load what a commit expired)."""
    if isinstance(job, Mapping):
        return {name: job[name] for name in names}
    return {name: getattr(job, name) for name in names}


def get_visible_job(session: Session, principal: Principal, job_id: str) -> Job:
    """By its id, or by a unique prefix of at least MIN_PREFIX digits, as git takes commits (``hpcgw status 9214``)."""
    job = session.get(Job, job_id)
    if job is None and MIN_PREFIX <= len(job_id) < ID_LENGTH:
        # A range on the primary key (its index), not LIKE; ids are lowercase hex, and "~" sorts after them.
        found = session.exec(select(Job).where(col(Job.id) >= job_id, col(Job.id) < job_id + "~").limit(50)).all()
        visible = [j for j in found if principal.can_see(j.team)]
        if len(visible) > 1:
            raise ConflictError(f"{job_id} is a prefix of {len(visible)} jobs' ids: give more of it")
        job = visible[0] if visible else None
    if job is None or not principal.can_see(job.team):
        raise NotFoundError(f"job {job_id} not found")
    return job


def record_state(
    session: Session, job: Job, state: JobState, *, slurm_state: str | None = None, reason: str | None = None
) -> None:
    """Change the state and append to the history, only when it changed. An unchanged job is not touched, so
    a poll cycle writes only the rows that changed (1,000 quiet jobs cost no UPDATE)."""
    if job.state != state:
        job.state = state
        job.updated_at = utcnow()
        session.add(JobEvent(job_id=job.id, state=state, slurm_state=slurm_state, reason=reason))
    session.add(job)


def request_cancel(session: Session, job: Job, by: str) -> None:
    """A job still in the gateway is cancelled at once; one in Slurm is marked for the worker to scancel
    (HTTP handlers never call Slurm). Terminal jobs are left alone."""
    if job.state.is_terminal:
        return
    if job.state == JobState.ACCEPTED and not job.dispatching:
        # Conditional, in the statement: the worker may have read this row to send it meanwhile, and whichever
        # commits first wins (its own claim is conditional too, gateway.worker.dispatch._mark_dispatching).
        now, reason = utcnow(), f"cancelled by {by}"
        table = rows.JOB.c
        still_waiting = (table.id == job.id) & (table.state == JobState.ACCEPTED) & table.dispatching.is_(False)
        values = {"state": JobState.CANCELLED, "reason": reason, "end_time": now, "updated_at": now}
        if cast(CursorResult[Any], session.execute(update(rows.JOB).where(still_waiting).values(**values))).rowcount:
            session.add(JobEvent(job_id=job.id, state=JobState.CANCELLED, slurm_state=None, reason=reason))
            session.flush()
            session.refresh(job)
            return
        session.refresh(job)  # the worker took it: it is scancel'd once Slurm has it
        if JobState(job.state).is_terminal:  # as refreshed (mypy keeps the narrowing to ACCEPTED above)
            return
    job.cancel_requested = True
    job.updated_at = utcnow()  # the worker wakes for cancellations asked since its last cycle
    session.add(job)


def counts_by_team(session: Session) -> dict[str, dict[str, int]]:
    """{team: {state: jobs}}, in one grouped query (the ix_job_team_state index)."""
    counts: dict[str, dict[str, int]] = defaultdict(dict)
    for team, state, n in session.exec(select(Job.team, Job.state, func.count()).group_by(Job.team, Job.state)):
        counts[team][state] = n
    return counts


def active_counts(session: Session, team: str) -> tuple[int, int]:
    """(jobs in Slurm, GPUs they hold or wait for) for ``team``."""
    rows = session.exec(
        select(Job.nodes, Job.gpus_per_node).where(Job.team == team, col(Job.state).in_(ACTIVE_IN_SLURM))
    ).all()
    return len(rows), sum(n * g for n, g in rows)
