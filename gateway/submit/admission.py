"""What every job-creating request passes before it is stored: the idempotency key, and the team's backlog."""

from __future__ import annotations

from sqlalchemy import func
from sqlmodel import Session, col, select

from gateway.config import GatewayConfig
from gateway.errors import InvalidRequestError, QueueFullError
from gateway.store import rows
from gateway.store.models import Job
from launchers.states import TERMINAL_STATES, JobState

UNFINISHED = [state for state in JobState if state not in TERMINAL_STATES]


def idempotent_job(session: Session, team: str, user: str, key: str | None) -> Job | None:
    """The job an earlier request with this idempotency key made, if any (loaded whole only when there is one)."""
    if key is None:
        return None
    job_id = rows.idempotent_id(session.connection(), team, user, key)
    return None if job_id is None else session.get(Job, job_id)


def check_backlog(config: GatewayConfig, team_name: str, waiting: int) -> None:
    """``waiting``: the team's jobs not yet sent to Slurm (rows.backlog, plus those accepted before in a group)."""
    if waiting >= config.teams[team_name].max_queued_jobs:
        raise QueueFullError(
            f"team {team_name} already has {waiting} jobs waiting (max_queued_jobs)",
            retry_after_s=max(5.0, 2 * config.poll.interval_s),  # the worker dispatches from it every cycle
        )


def check_tasks(session: Session, config: GatewayConfig, team_name: str, wanted: int) -> None:
    """A request that makes ``wanted`` jobs at once (a sweep, a sweep's retry) counts them all against the team's
    max_queued_jobs, with the team's jobs waiting for the worker and its sweeps' tasks not yet ended (which wait
    in their arrays): one small request never makes more jobs than the team may queue."""
    limit = config.teams[team_name].max_queued_jobs
    if wanted > limit:
        raise InvalidRequestError(
            f"{wanted} jobs in one request exceed team {team_name}'s max_queued_jobs of {limit}", field="space"
        )
    connection = session.connection()
    tasks = connection.execute(
        select(func.count())
        .select_from(Job)
        .where(Job.team == team_name, col(Job.state).in_(UNFINISHED), col(Job.sweep_id).is_not(None))
    ).scalar_one()
    waiting = rows.backlog(connection, team_name) + int(tasks)
    if waiting + wanted > limit:
        raise QueueFullError(
            f"team {team_name} already has {waiting} jobs waiting or in unfinished sweeps; {wanted} more exceed "
            f"its max_queued_jobs of {limit}",
            retry_after_s=max(5.0, 2 * config.poll.interval_s),
        )
