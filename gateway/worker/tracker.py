"""Tracking, apart from the worker's life cycle: one poll reads Slurm once for every active job, gathers each job's
evidence, lets decide() (gateway.worker.apply) give the verdict, and writes it.

The loop (gateway.worker.loop) decides only when a poll runs; whether it holds the lease, sleeps or stops changes
nothing here. What tracking remembers between polls (that a job was seen in Slurm, Slurm's unchanged answer for a
waiting job, the array elements scancel'd while they waited) is evidence no Slurm command gives back, so it is kept
next to the poll that maintains it and handed to decide() like the rest: no verdict on a job (lost, cancelled
while waiting) is made anywhere else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import select as columns
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from gateway.config import GatewayConfig
from gateway.store.models import Job, JobFields, aware, utcnow
from gateway.submit.comments import expected_comment
from gateway.submit.job_requests import ACTIVE_IN_SLURM
from gateway.worker.applier import WAITING_IN_SLURM, JobApplier
from gateway.worker.attempts import AttemptRecorder
from gateway.worker.health import HealthGuard
from gateway.worker.isolation import AfterCommit, Isolation, hold_transaction
from gateway.worker.metrics import MetricsReader
from gateway.worker.observe import Identity, Observations, observe
from gateway.worker.stats import WorkerStats

LOAD_CHUNK = 500  # jobs loaded whole per query in a poll (SQLite allows 999 bound parameters in older builds)
# What a poll reads of every active job: enough to know its Slurm job and whether anything may have changed.
TRACKED_COLUMNS = tuple(col(getattr(Job, name)) for name in JobFields.TRACKED)


class Tracker(JobApplier):
    """Every active job's poll -> evidence -> decide -> write, once per call of :meth:`poll`, and the memory
    between polls that is part of the evidence."""

    def __init__(
        self,
        engine: Engine,
        config: GatewayConfig,
        stats: WorkerStats,
        stopping: Callable[[], bool],
        cancel: Callable[[], bool],
    ) -> None:
        """``stopping``: the worker is stopping (the poll ends between rows). ``cancel``: the worker's
        cancellations, run at once for the health policy's stop verdicts of a poll, not a cycle later."""
        self.engine = engine
        self.config = config
        self.stats = stats
        self.stopping = stopping
        self.cancel = cancel
        self.metrics = MetricsReader()
        self.attempts = AttemptRecorder()
        self.guard = HealthGuard(config)
        # the jobs whose apply failed, each applied alone (gateway.worker.isolation)
        self.isolation = Isolation(stats, stopping=stopping)
        self._last_seen: dict[str, datetime] = {}  # Slurm id -> when this worker last saw it in Slurm
        self._unchanged: dict[str, tuple[object, ...]] = {}  # job id -> what Slurm said of it, while it waits
        self._vanishing: set[str] = set()  # array elements scancel'd while waiting

    @property
    def failing(self) -> dict[str, str]:
        """Job id -> why its last apply failed, while it fails."""
        return self.isolation.failing

    def scancelled(self, jobs: Iterable[Job]) -> None:
        """The worker scancel'd these jobs: an array element among them that was still waiting may leave Slurm
        without a record, which decide() knows from this memory (see apply.cancelled_while_waiting)."""
        for job in jobs:
            if job.state in WAITING_IN_SLURM and "_" in (job.slurm_job_id or ""):
                self._vanishing.add(job.slurm_job_id or "")

    def poll(self) -> bool:
        """One sacct (and at most one squeue) for every active job. The jobs are read first as a few columns;
        only those whose evidence may have changed are loaded whole and decided on (see :meth:`_unchanged_since`)."""
        with Session(self.engine, expire_on_commit=False) as session:
            query = columns(*TRACKED_COLUMNS).where(
                col(Job.state).in_(ACTIVE_IN_SLURM), col(Job.slurm_job_id).is_not(None)
            )
            active: list[Any] = list(session.execute(query).all())  # rows: attributes named as the columns
            if not active:
                return False
            now = utcnow()
            # The gateway accepted the job before any sbatch (or adoption after a crash): a record of the same id
            # from before then belongs to another job.
            owner = self.config.unix_user_of  # and only a record of the job's own user and account is its
            wanted = {
                j.slurm_job_id: Identity(expected_comment(j), aware(j.submit_time), owner(j.user), j.account)
                for j in active
                if j.slurm_job_id
            }
            overdue = {j.slurm_job_id for j in active if j.slurm_job_id and self._overdue(j, now)}
            obs = observe(
                wanted,
                want_pending=any(j.state in WAITING_IN_SLURM for j in active),
                chunk=self.config.poll.sacct_chunk,
                confirm_missing=overdue - set(self._last_seen) if overdue else None,
            )
            self._record_health(obs)
            staged = AfterCommit()
            hold_transaction(session)
            to_decide = [j.id for j in active if not self._unchanged_since(j, obs, now, staged)]
            changed = False
            for start in range(0, len(to_decide), LOAD_CHUNK):
                chunk = to_decide[start : start + LOAD_CHUNK]
                changed |= self.isolation.apply(
                    session, chunk, lambda ids: self._apply_jobs(session, ids, obs, now, staged), self._undo(staged)
                )
                if self.stopping():
                    break
            session.commit()
            staged.run()  # the caches say what is now committed
            self.isolation.prune({j.id for j in active})
            changed |= self.guard.carry_out(self.engine)
            if self.guard.stopped:
                self.guard.stopped = False
                changed |= self.cancel()  # this cycle's verdicts, not the next cycle's
            if len(self._unchanged) > len(active):  # jobs that left Slurm's queue by another way (cancelled)
                alive = {j.id for j in active}
                self._unchanged = {k: v for k, v in self._unchanged.items() if k in alive}
            return changed

    def _record_health(self, obs: Observations) -> None:
        self.stats.poll_cycles += 1
        self.stats.slurm_commands += obs.commands
        self.stats.accounting_ok = obs.accounting_ok
        self.stats.source = obs.source
        if obs.error:
            self.stats.last_error = obs.error
