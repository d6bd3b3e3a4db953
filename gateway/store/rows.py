"""The submission path's reads and writes, in SQLAlchemy Core statements on the session's connection.

Why not the ORM here: measured in-process (the ASGI app called directly, no sockets), a POST /v1/jobs cost
4.7 ms of CPU, 70 % of it in SQLAlchemy's ORM: its unit of work, identity map and per-statement ORM compile
for the algorithm lookup, the backlog count and two inserts. The same statements in Core cost a fraction of
that (issue 13 asks a POST at 16 clients to be as fast as slurmrestd's). Every statement here touches a
bounded number of rows through an index: a primary key, a unique constraint, or ix_job_team_state_sweep.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from pydantic_core import PydanticUndefined
from sqlalchemy import ColumnElement, Connection, Select, Table, and_, bindparam, func, insert, select

from gateway.store.models import PUBLISHED, Algorithm, AlgorithmVersion, Job, JobEvent
from launchers.states import JobState

# SQLModel's metaclass sets __table__, which its stubs do not declare
JOB = cast(Table, Job.__table__)  # type: ignore[attr-defined]
EVENT = cast(Table, JobEvent.__table__)  # type: ignore[attr-defined]
ALGORITHM = cast(Table, Algorithm.__table__)  # type: ignore[attr-defined]
VERSION = cast(Table, AlgorithmVersion.__table__)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Version:
    """What a job takes from its algorithm version: read once, at submission, and copied into the job's row
    (a later version, or a changed current version, never changes a stored job)."""

    algorithm: str
    version: str
    image: str
    image_digest: str | None
    command: list[str]
    local_command: list[str] | None
    framework: str


def find_version(connection: Connection, name: str, version: str | None, team: str) -> Version | None:
    """One indexed read: the named version, or the algorithm's current one, of an algorithm ``team``'s jobs may
    run (its own or a published one); None: no such algorithm or version, or another team's."""
    query = _NAMED if version is not None else _CURRENT
    row = connection.execute(query, {"name": name, "version": version, "team": team}).first()
    return None if row is None else Version(**row._mapping)


def idempotent_id(connection: Connection, team: str, user: str, key: str) -> str | None:
    """The id of the job an earlier request with this key made (the unique constraint's index)."""
    return connection.execute(_IDEMPOTENT, {"team": team, "user": user, "key": key}).scalar()


def backlog(connection: Connection, team: str) -> int:
    """The team's jobs waiting for the worker (sweep tasks wait in their sweep's array, not here): counted in
    the index on (team, state, sweep_id) alone, and bounded by the team's max_queued_jobs."""
    return int(connection.execute(_BACKLOG, {"team": team}).scalar_one())


def new_values(**given: Any) -> dict[str, Any]:
    """A whole job row as a dict: every column, the model's defaults under what is given. Cheaper than a Job
    (whose attribute instrumentation cost ~0.3 ms a row), for rows that are only inserted and answered."""
    return _DEFAULTS | given


def values_of(job: Job) -> dict[str, Any]:
    return {column.name: getattr(job, column.key) for column in JOB.columns}


def insert_jobs(connection: Connection, jobs: list[dict[str, Any]]) -> None:
    """New jobs' rows and the first event of each one's history, in the caller's transaction."""
    if jobs:
        connection.execute(insert(JOB), jobs)
        events = [{"job_id": job["id"], "state": job["state"], "at": job["submit_time"]} for job in jobs]
        connection.execute(insert(EVENT), events)


# Built once: a statement's cache key is then computed once too, not at every request.
_VERSION_COLUMNS = [VERSION.c[name] for name in Version.__dataclass_fields__]


def _version_query(wanted: ColumnElement[Any]) -> Select[Any]:
    joined = ALGORITHM.join(VERSION, and_(VERSION.c.algorithm == ALGORITHM.c.name, VERSION.c.version == wanted))
    visible = ALGORITHM.c.team.in_([bindparam("team"), PUBLISHED])
    return select(*_VERSION_COLUMNS).select_from(joined).where(ALGORITHM.c.name == bindparam("name"), visible)


_NAMED = _version_query(bindparam("version"))
_CURRENT = _version_query(ALGORITHM.c.current_version)
_IDEMPOTENT = select(JOB.c.id).where(
    JOB.c.team == bindparam("team"), JOB.c.user == bindparam("user"), JOB.c.idempotency_key == bindparam("key")
)
_BACKLOG = (
    select(func.count())
    .select_from(JOB)
    .where(JOB.c.team == bindparam("team"), JOB.c.state == JobState.ACCEPTED, JOB.c.sweep_id.is_(None))
)
_DEFAULTS: dict[str, Any] = {
    column.name: None if field is None or field.default is PydanticUndefined else field.default
    for column in JOB.columns
    for field in [Job.model_fields.get(column.key)]
}
