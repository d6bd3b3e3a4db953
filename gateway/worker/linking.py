"""Recording that accepted jobs reached Slurm: each job's Slurm id, its ``queued`` state and its history's row.
An array's jobs are linked in a few statements, not one ORM flush per job: for 1,000-element arrays that flush
was the dispatch's largest cost after sbatch itself."""

from __future__ import annotations

from typing import Any

from sqlalchemy import DateTime, String, Update, bindparam, cast, insert, literal, update
from sqlmodel import Session, select

from gateway.store import rows
from gateway.store.models import Job, utcnow
from gateway.submit.job_requests import record_state
from launchers.states import JobState


def link(session: Session, job: Job, slurm_job_id: str) -> None:
    """Record that ``job`` is Slurm job ``slurm_job_id`` (queued); the caller commits."""
    job.slurm_job_id = slurm_job_id
    job.dispatching = False
    job.dispatch_error = None
    job.slurm_submit_time = utcnow()
    job.slurm_state = "PENDING"
    record_state(session, job, JobState.QUEUED, slurm_state="PENDING")


def link_all(session: Session, jobs: list[Job], slurm_ids: list[str]) -> None:
    """``link`` for a whole array's jobs (all waiting as ``accepted``), in two statements instead of an ORM
    flush of one update and one event per job: for 1,000-element arrays that flush was the dispatch's largest
    cost after sbatch itself. The loaded objects are not updated; the caller commits and does not use them again."""
    now = utcnow()
    queued = {"state": JobState.QUEUED, "slurm_state": "PENDING"}
    linked = {"dispatching": False, "dispatch_error": None, "slurm_submit_time": now, "updated_at": now, **queued}
    each_row(
        session,
        update(rows.JOB).where(rows.JOB.c.id == bindparam("job")),
        [{"job": job.id, "slurm_job_id": slurm_id, **linked} for job, slurm_id in zip(jobs, slurm_ids, strict=True)],
    )
    each_row(session, insert(rows.EVENT), [{"job_id": job.id, "at": now, **queued} for job in jobs])


def link_batch(session: Session, batch_id: str, master: str) -> None:
    """``link_all`` for a coalesced batch, whose job at ``batch_index`` i is element i of array ``master``: two
    statements that Slurm's ids and the history's rows are computed in, by the database, for the whole batch."""
    now = utcnow()
    job = rows.JOB
    queued = {"state": JobState.QUEUED.value, "slurm_state": "PENDING"}  # text: literal() would type an enum
    connection = session.connection()
    connection.execute(
        update(job)
        .where(job.c.batch_id == batch_id)
        .values(
            slurm_job_id=literal(f"{master}_") + cast(job.c.batch_index, String),
            dispatching=False,
            dispatch_error=None,
            slurm_submit_time=now,
            updated_at=now,
            **queued,
        )
    )
    history = select(job.c.id, literal(now, DateTime), *(literal(v) for v in queued.values()))
    connection.execute(
        insert(rows.EVENT).from_select(["job_id", "at", *queued], history.where(job.c.batch_id == batch_id))
    )


def each_row(session: Session, statement: Any, values: list[dict[str, Any]]) -> None:
    """One statement run for every row of ``values`` (an executemany), each row carrying all of its values:
    an UPDATE's columns are bound from the rows' keys, ``job`` naming the row to update."""
    if values:
        names = [name for name in values[0] if name != "job"]
        if isinstance(statement, Update):
            statement = statement.values({name: bindparam(name) for name in names})
        session.connection().execute(statement, values)
