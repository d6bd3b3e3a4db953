"""What every job-creating request passes before it is stored: the idempotency key, and the team's backlog."""

from __future__ import annotations

from sqlmodel import Session

from gateway import rows
from gateway.config import GatewayConfig
from gateway.errors import QueueFullError
from gateway.models import Job


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
