"""A bad record harms one record: what keeps one job's apply from failing every other job's.

Each job's files are its user's to write, and its Slurm record is partly theirs too, so gathering its evidence,
deciding and writing can raise for that job alone. The poll applies a chunk of jobs in one SAVEPOINT (the common
case costs no more than before); when the chunk fails, it is applied again one job at a time, each in a SAVEPOINT
of its own, and a job that fails is marked with the reason (``Job.tracking_error``), counted for /healthz and
/metrics, and applied alone from then on, so that it costs the others one failed chunk once, not every cycle
(as Kubernetes controllers requeue one object instead of failing the loop).

The tracker's caches (gateway.worker.tracker) describe what the database holds (Slurm's unchanged answer for a
waiting job, that a job ended). They are staged here per job and applied only after the commit that wrote them: a
rolled-back write leaves no cache saying it happened.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from gateway.store.models import Job
from gateway.worker.stats import WorkerStats

log = logging.getLogger(__name__)

LISTED = 20  # jobs named in the admin's /healthz: enough to find them, bounded for any number failing
REASON_CHARS = 512  # Job.tracking_error's bound


class AfterCommit:
    """Cache updates by job, carried out once the cycle's writes are committed; a job's are dropped when its
    write is rolled back."""

    def __init__(self) -> None:
        self._actions: dict[str, list[Callable[[], None]]] = {}

    def add(self, job_id: str, action: Callable[[], None]) -> None:
        self._actions.setdefault(job_id, []).append(action)

    def drop(self, job_ids: Iterable[str]) -> None:
        for job_id in job_ids:
            self._actions.pop(job_id, None)

    def run(self) -> None:
        actions, self._actions = self._actions, {}
        for per_job in actions.values():
            for action in per_job:
                action()


class Isolation:
    """The jobs whose last apply failed, and why; those that ever failed are applied alone while they are
    tracked, so that a job failing every cycle costs a savepoint, not its chunk's second pass."""

    def __init__(self, stats: WorkerStats, stopping: Callable[[], bool]) -> None:
        self.stats = stats
        self.stopping = stopping
        self.failing: dict[str, str] = {}  # job id -> reason, while its apply fails
        self.alone: set[str] = set()  # job ids applied in a savepoint of their own

    def apply(
        self,
        session: Session,
        chunk: list[str],
        apply_jobs: Callable[[list[str]], bool],
        undo: Callable[[list[str]], None],
    ) -> bool:
        """``apply_jobs`` on the chunk in one savepoint, and on each job that failed before in its own. When the
        chunk fails, each of its jobs is applied again alone, to find the one that failed. ``undo``: forget
        what the worker remembered of jobs whose writes were rolled back. Returns whether anything changed."""
        alone = [job_id for job_id in chunk if job_id in self.alone]
        together = [job_id for job_id in chunk if job_id not in self.alone]
        changed = False
        if together:
            try:
                with session.begin_nested():
                    changed = apply_jobs(together)
            except OperationalError:
                raise  # the database's trouble, not a job's: the cycle fails, and the next one tries again
            except Exception:
                log.warning("applying %d jobs failed; applying them one by one", len(together), exc_info=True)
                undo(together)
                changed, alone = False, together + alone
        for job_id in alone:
            if self.stopping():
                break
            changed |= self._apply_alone(session, job_id, apply_jobs, undo)
        return changed

    def _apply_alone(
        self,
        session: Session,
        job_id: str,
        apply_jobs: Callable[[list[str]], bool],
        undo: Callable[[list[str]], None],
    ) -> bool:
        try:
            with session.begin_nested():
                return apply_jobs([job_id])
        except OperationalError:
            raise
        except Exception as exc:
            undo([job_id])
            reason = self.failed(job_id, exc)
            log.warning("job %s: %s", job_id, reason)
        try:
            with session.begin_nested():
                job = session.get(Job, job_id)
                if job is not None and job.tracking_error != reason:
                    job.tracking_error = reason
                    session.add(job)
        except Exception:  # not even the reason can be written: it is counted, and shown in /healthz
            log.exception("job %s: cannot record its tracking error", job_id)
        return False

    def failed(self, job_id: str, exc: BaseException) -> str:
        reason = describe(exc)
        self.failing[job_id] = reason
        self.alone.add(job_id)
        self.stats.tracking_failures += 1
        self._publish()
        return reason

    def cleared(self, job_id: str) -> None:
        if self.failing.pop(job_id, None) is not None:
            self._publish()

    def prune(self, tracked: set[str]) -> None:
        """Jobs no longer tracked (ended, cancelled while waiting) are no longer failing."""
        self.alone &= tracked
        if any(job_id not in tracked for job_id in self.failing):
            self.failing = {k: v for k, v in self.failing.items() if k in tracked}
            self._publish()

    def _publish(self) -> None:
        self.stats.jobs_failing = len(self.failing)
        self.stats.failing_jobs = dict(list(self.failing.items())[:LISTED])


def hold_transaction(session: Session) -> None:
    """pysqlite opens its transaction only before a write, so the first SAVEPOINT would open it instead and
    its RELEASE commit it: each chunk committed alone, and a failed commit at the end undoing nothing. Opened
    here, the cycle's writes are one transaction, with savepoints inside, as on PostgreSQL.

    IMMEDIATE: the write lock is taken now, waiting (the busy timeout) for an API request's write to end. A
    deferred transaction reads first, and its first write then fails at once ("database is locked", which no
    busy timeout retries) whenever a request committed in between: every job of the cycle would fail."""
    connection = session.connection()
    if connection.dialect.name == "sqlite" and not connection.connection.dbapi_connection.in_transaction:  # type: ignore[union-attr]
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def describe(exc: BaseException) -> str:
    """One bounded printable line: the exception's message may quote what the job wrote."""
    text = f"tracking failed: {type(exc).__name__}: {str(exc)[:300]}"
    return "".join(c if c.isprintable() else "?" for c in text)[:REASON_CHARS]
