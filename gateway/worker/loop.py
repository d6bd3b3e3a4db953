"""The single background worker: releases accepted jobs to Slurm within each team's quota, carries out
cancellations, and tracks every active job with one sacct call per cycle (plus at most one squeue).

HTTP handlers never call Slurm; they read what this worker wrote. The interval adapts: a submission wakes the
worker at once and drops the interval to the floor, and quiet cycles double it up to the configured interval.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from gateway.config import GatewayConfig
from gateway.jobs import ACTIVE_IN_SLURM, expected_comment, record_state
from gateway.models import Job, JobAttempt, utcnow
from gateway.worker.apply import Evidence, Transition, decide
from gateway.worker.dispatch import Dispatcher, Outcome
from gateway.worker.metrics import MetricsReader
from gateway.worker.observe import Identity, JobObservation, Observations, observe
from gateway.worker.reconcile import reconcile
from gateway.worker.stats import WorkerStats
from launchers.runtime.markers import JobMarkers
from launchers.slurm import commands
from launchers.slurm.shell import CommandError
from launchers.slurm.sinfo import PartitionSize
from launchers.states import JobState, from_slurm

log = logging.getLogger(__name__)
PARTITION_REFRESH_S = 300.0


class Worker:
    def __init__(self, engine: Engine, config: GatewayConfig) -> None:
        self.engine = engine
        self.config = config
        self.stats = WorkerStats(interval_s=config.poll.floor_s)
        self._stop = threading.Event()
        self.dispatcher = Dispatcher(config, self.stats, stopping=self._stop.is_set)
        self.metrics = MetricsReader()
        self.partition_sizes: dict[str, PartitionSize] = {}
        self._partitions_at = 0.0
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_seen: dict[str, datetime] = {}  # Slurm id -> when this worker last saw it in Slurm
        self._attempts_seen: dict[str, tuple[object, ...]] = {}
        self._reconciled = False  # rows left dispatching by a crash were looked for in Slurm

    # --- life cycle ----------------------------------------------------------------------------------------

    def start(self) -> None:
        if self.config.slurm_conf is not None:  # this process's Slurm commands talk to the configured cluster
            os.environ["SLURM_CONF"] = str(self.config.slurm_conf)
        self.refresh_partitions()
        self._reconciled = reconcile(self.engine)
        self._thread = threading.Thread(target=self._loop, name="hpcgw-worker", daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        """From a signal handler: no further sbatch, no further row; :meth:`stop` then waits for the thread."""
        self._stop.set()
        self._wake.set()

    def stop(self) -> None:
        """Stop within a second: the dispatcher checks between sbatch calls and the poll between rows, so the
        row being written is finished and nothing is left half-dispatched."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def wake(self) -> None:
        """Called after a submission or cancellation: poll soon, and quickly for a while."""
        self.stats.interval_s = self.config.poll.floor_s
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            busy = False
            try:
                busy = self.run_cycle()
            except Exception:  # the worker must survive anything one cycle throws
                log.exception("worker cycle failed")
                # It may have died between an sbatch and the database's record of it (a full disk, PostgreSQL
                # restarting): such rows stay marked dispatching, and the next cycle looks for them in Slurm
                # before sending anything, as at start-up.
                self._reconciled = False
            floor, ceiling = self.config.poll.floor_s, self.config.poll.interval_s
            self.stats.interval_s = floor if busy else min(max(self.stats.interval_s, floor) * 2, ceiling)
            self._wake.wait(self.stats.interval_s)
            self._wake.clear()

    # --- one cycle -----------------------------------------------------------------------------------------

    def run_cycle(self) -> bool:
        """Cancel, dispatch, then poll. Returns whether anything changed (which keeps the interval at its floor)."""
        started = time.perf_counter()
        if time.monotonic() - self._partitions_at > PARTITION_REFRESH_S:
            self.refresh_partitions()
        changed = self.cancel_requested()
        if not self._stop.is_set():
            changed |= self.dispatch()
        if not self._stop.is_set():
            changed |= self.poll()
        elapsed = time.perf_counter() - started
        self.stats.cycles += 1
        self.stats.last_cycle_s = elapsed
        self.stats.cycle_s_sum += elapsed
        return changed

    def refresh_partitions(self) -> None:
        try:
            self.partition_sizes = commands.partitions()
            self.dispatcher.max_array_size = commands.max_array_size()
            self._partitions_at = time.monotonic()
        except CommandError as exc:
            log.warning("cannot read partitions: %s", str(exc).splitlines()[0])

    def cancel_requested(self) -> bool:
        """scancel, in one call, every job whose cancellation was asked for over HTTP."""
        with Session(self.engine, expire_on_commit=False) as session:
            jobs = session.exec(
                select(Job).where(col(Job.cancel_requested).is_(True), col(Job.slurm_job_id).is_not(None))
            ).all()
            if not jobs:
                return False
            by_user: dict[str, list[str]] = {}
            for j in jobs:  # scancel as each job's own user, as it was submitted
                by_user.setdefault(self.config.unix_user_of(j.user), []).append(j.slurm_job_id or "")
            try:
                for user, ids in by_user.items():
                    commands.scancel(ids, as_user=user)
            except CommandError as exc:
                log.warning("scancel failed, will retry: %s", str(exc).splitlines()[0])
                return False
            for job in jobs:
                job.cancel_requested = False
                session.add(job)
            session.commit()
            return True

    def dispatch(self) -> bool:
        if not self._reconciled:  # Slurm did not answer at start-up: look for the crash's jobs before sending any
            self._reconciled = reconcile(self.engine)
        with Session(self.engine, expire_on_commit=False) as session:
            return self.dispatcher.run(session) in (Outcome.QUEUED, Outcome.REFUSED)

    def poll(self) -> bool:
        with Session(self.engine, expire_on_commit=False) as session:
            active = session.exec(
                select(Job).where(col(Job.state).in_(ACTIVE_IN_SLURM), col(Job.slurm_job_id).is_not(None))
            ).all()
            if not active:
                return False
            now = utcnow()
            # The gateway accepted the job before any sbatch (or adoption after a crash): a record of the same id
            # from before then belongs to another job.
            wanted = {
                j.slurm_job_id: Identity(expected_comment(j), _aware(j.submit_time)) for j in active if j.slurm_job_id
            }
            overdue = {j.slurm_job_id for j in active if j.slurm_job_id and self._overdue(j, now)}
            obs = observe(
                wanted,
                want_pending=any(j.state in (JobState.QUEUED.value, JobState.REQUEUED.value) for j in active),
                chunk=self.config.poll.sacct_chunk,
                confirm_missing=overdue - set(self._last_seen) if overdue else None,
            )
            self._record_health(obs)
            changed = False
            for job in active:
                if self._stop.is_set():
                    break  # shutting down: what is written stays consistent, the rest waits for the next start
                changed |= self.apply(session, job, obs, now)
            session.commit()
            return changed

    def _overdue(self, job: Job, now: datetime) -> bool:
        """In Slurm for longer than the lost grace, and never seen in accounting or in the queue since."""
        submitted = _aware(job.slurm_submit_time)
        return submitted is not None and (now - submitted).total_seconds() > self.config.poll.lost_after_s

    def _record_health(self, obs: Observations) -> None:
        self.stats.poll_cycles += 1
        self.stats.slurm_commands += obs.commands
        self.stats.accounting_ok = obs.accounting_ok
        self.stats.source = obs.source
        if obs.error:
            self.stats.last_error = obs.error

    def apply(self, session: Session, job: Job, obs: Observations, now: datetime) -> bool:
        """Gather the job's evidence, decide, write. Returns whether anything the API shows changed."""
        slurm_id = job.slurm_job_id or ""
        seen = obs.jobs.get(slurm_id)
        pending = obs.pending.get(slurm_id)
        if seen is not None or pending is not None:
            self._last_seen[slurm_id] = now
        markers = JobMarkers(Path(job.submit_folder), slurm_id)
        terminal = seen is not None and seen.settled and from_slurm(seen.slurm_state).is_terminal
        lost = (
            seen is None
            and pending is None
            and obs.accounting_ok
            and obs.known_to_controller is not None
            and slurm_id not in obs.known_to_controller
            and slurm_id not in self._last_seen
            and self._overdue(job, now)
        )
        submitted = _aware(job.slurm_submit_time)
        evidence = Evidence(
            seen=seen,
            pending=pending,
            started=markers.started() if seen is not None else None,
            first_failure=markers.first_failure() if terminal else None,
            lost_after_s=(now - submitted).total_seconds() if lost and submitted else None,
        )
        transition = decide(job, evidence, now)
        if seen is not None and seen.attempts:
            self._record_attempts(session, job, seen)
        changed = self.write(session, job, transition)
        if transition.state is not None and transition.state.is_terminal:
            self._last_seen.pop(slurm_id, None)
        return changed

    def _record_attempts(self, session: Session, job: Job, seen: JobObservation) -> None:
        """One row per run (``sacct -D``), written only when a run was added or changed."""
        key = tuple((a.slurm_state, a.node_list, a.start, a.end) for a in seen.attempts)
        if self._attempts_seen.get(job.id) == key:
            return
        existing = {a.number: a for a in session.exec(select(JobAttempt).where(JobAttempt.job_id == job.id))}
        for number, attempt in enumerate(seen.attempts):
            row = existing.get(number) or JobAttempt(
                job_id=job.id, number=number, slurm_job_id=job.slurm_job_id or "", slurm_state=attempt.slurm_state
            )
            row.slurm_state, row.node_list = attempt.slurm_state, attempt.node_list
            row.start_time, row.end_time = attempt.start, attempt.end
            row.reason = attempt.reason
            session.add(row)
        self._attempts_seen[job.id] = key

    def write(self, session: Session, job: Job, transition: Transition) -> bool:
        before = (job.state, job.slurm_state, job.reason, job.position_in_queue, len(job.metrics))
        for name, value in transition.fields.items():
            setattr(job, name, value)
        if transition.read_metrics:
            epochs = self.metrics.read(job.id, Path(job.folder) / "metrics.jsonl")
            if epochs is not None:
                job.metrics = epochs
        for state, slurm_state, reason in transition.history:
            record_state(session, job, state, slurm_state=slurm_state, reason=reason)
        final = transition.state
        if final is not None and final.is_terminal and final is not JobState.SUCCEEDED:
            self.stats.failures_by_team[job.team] = self.stats.failures_by_team.get(job.team, 0) + 1
        after = (job.state, job.slurm_state, job.reason, job.position_in_queue, len(job.metrics))
        if after != before:
            session.add(job)
        return after != before

    def health(self) -> dict[str, Any]:
        s = self.stats
        return {
            "worker_alive": self._thread is not None and self._thread.is_alive(),
            "accounting": "ok" if s.accounting_ok else "unavailable: tracking through squeue and scontrol",
            "tracking_source": s.source,
            "slurm_reachable": s.slurm_reachable,
            "cycles": s.cycles,
            "poll_cycles": s.poll_cycles,
            "slurm_commands": s.slurm_commands,
            "interval_s": s.interval_s,
            "last_error": s.last_error,
        }


def _aware(value: datetime | None) -> datetime | None:
    """SQLite hands datetimes back without their zone; the gateway stores UTC."""
    return value if value is None or value.tzinfo is not None else value.replace(tzinfo=UTC)
