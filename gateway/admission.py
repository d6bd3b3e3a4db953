"""What every job-creating request passes before it is stored: the idempotency key, and the team's backlog."""

from __future__ import annotations

from sqlalchemy import func
from sqlmodel import Session, col, select

from gateway.config import GatewayConfig
from gateway.errors import QueueFullError
from gateway.models import Job
from launchers.states import JobState


def idempotent_job(session: Session, team: str, user: str, key: str | None) -> Job | None:
    """The job an earlier request with this idempotency key made, if any."""
    if key is None:
        return None
    return session.exec(select(Job).where(Job.team == team, Job.user == user, Job.idempotency_key == key)).first()


def check_backlog(session: Session, config: GatewayConfig, team_name: str) -> None:
    backlog = session.exec(
        select(func.count())
        .select_from(Job)
        .where(Job.team == team_name, Job.state == JobState.ACCEPTED.value, col(Job.sweep_id).is_(None))
    ).one()
    if backlog >= config.teams[team_name].max_queued_jobs:
        raise QueueFullError(
            f"team {team_name} already has {backlog} jobs waiting (max_queued_jobs)",
            retry_after_s=max(5.0, 2 * config.poll.interval_s),  # the worker dispatches from it every cycle
        )
