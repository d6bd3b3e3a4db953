"""The single active worker's life cycle: releases accepted jobs to Slurm within each team's quota, carries out
cancellations, and has every active job tracked (gateway.worker.tracker) once per cycle. Kept apart from the
tracking so that the lease, the sleep and the stop can change without touching a verdict, and the other way round.

HTTP handlers never call Slurm; they read what this worker wrote. It runs in its own process (`hpcgw worker`),
or as a thread of a one-process gateway (tests). Only the holder of the lease (gateway.worker.lease) works;
another waits as a standby and takes over when the lease is free. The interval adapts: new work (a row accepted
or a cancellation asked since the last cycle, seen by an indexed query every WAKE_CHECK_S) wakes the worker at
once and drops the interval to the floor, and quiet cycles double it up to the configured interval.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import timedelta
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session, col, select

from gateway.config import GatewayConfig
from gateway.store.models import Job, utcnow
from gateway.worker import status
from gateway.worker.dispatch import Dispatcher, Outcome, collection_paused
from gateway.worker.isolation import describe
from gateway.worker.lease import Lease, holder_name, lease_for
from gateway.worker.reconcile import reconcile
from gateway.worker.stats import WorkerStats
from gateway.worker.tracker import Tracker
from launchers.slurm import commands
from launchers.slurm.shell import CommandError
from launchers.slurm.sinfo import PartitionSize
from launchers.states import JobState

log = logging.getLogger(__name__)
PARTITION_REFRESH_S = 300.0
WAKE_CHECK_S = 0.2  # how often a sleeping worker asks the database for new work
STANDBY_RETRY_S = 1.0  # how often a standby asks for the lease: the take-over delay after a kill


class Worker:
    def __init__(self, engine: Engine, config: GatewayConfig) -> None:
        self.engine = engine
        self.config = config
        self.stats = WorkerStats(interval_s=config.poll.floor_s)
        self._stop = threading.Event()
        self.lease: Lease = lease_for(engine)
        self.epoch = 0  # the lease's epoch while this worker is active, 0 while it stands by
        self.dispatcher = Dispatcher(config, self.stats, stopping=self._must_not_submit)
        self.partition_sizes: dict[str, PartitionSize] = {}
        self._partitions_at = 0.0
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._reconciled = False  # rows left dispatching by a crash were looked for in Slurm
        self._since = utcnow()  # the start of the last cycle: newer rows are new work
        self._sent = False  # the last dispatch sent jobs to Slurm
        # poll -> evidence -> decide -> write, and what it remembers of the jobs between cycles
        self.tracking = Tracker(engine, config, self.stats, stopping=self._stop.is_set, cancel=self.cancel_requested)

    # --- life cycle ----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Raises WorkerConflictError where a second worker may not run at all (SQLite)."""
        if self.config.slurm_conf is not None:  # this process's Slurm commands talk to the configured cluster
            os.environ["SLURM_CONF"] = str(self.config.slurm_conf)
        if self.lease.acquire():
            self._become_active()
        else:
            log.info("another worker is active; standing by (asking every %.0f s)", STANDBY_RETRY_S)
        self._thread = threading.Thread(target=self._loop, name="hpcgw-worker", daemon=True)
        self._thread.start()

    def _become_active(self) -> None:
        self.epoch = status.take_over(self.engine, holder_name())
        log.info("worker %s is active (epoch %d)", holder_name(), self.epoch)
        self.refresh_partitions()
        self._reconciled = reconcile(self.engine, self.config.poll.dispatch_grace_s, self.config.unix_user_of)

    def _must_not_submit(self) -> bool:
        """Checked before every sbatch: stopping, or no longer the lease's holder (another may be active now).
        A worker driven by hand (run_cycle without start, as tests do) holds no lease and checks none."""
        return self._stop.is_set() or (self.active and not self.lease.held())

    @property
    def active(self) -> bool:
        return self.epoch > 0

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
        self.lease.release()

    def wake(self) -> None:
        """Called after a submission or cancellation: poll soon, and quickly for a while."""
        self.stats.interval_s = self.config.poll.floor_s
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            if not self.active:
                self._stand_by()
                continue
            busy = False
            try:
                if not self.lease.held():
                    log.error("worker epoch %d lost its lease: standing by", self.epoch)
                    self.epoch = 0
                    continue
                busy = self.run_cycle()
                self.stats.last_cycle_failed = False
                status.publish(self.engine, self.epoch, self.stats, self.partition_sizes)
            except Exception as exc:  # the worker must survive anything one cycle throws
                log.exception("worker cycle failed")
                # It may have died between an sbatch and the database's record of it (a full disk, PostgreSQL
                # restarting): such rows stay marked dispatching, and the next cycle looks for them in Slurm
                # before sending anything, as at start-up.
                self._reconciled = False
                self._cycle_failed(exc)
            floor, ceiling = self.config.poll.floor_s, self.config.poll.interval_s
            self.stats.interval_s = floor if busy else min(max(self.stats.interval_s, floor) * 2, ceiling)
            if not (busy and self.has_new_work()):  # jobs that arrived during a busy cycle's poll go now
                self._sleep(self.stats.interval_s)

    def _cycle_failed(self, exc: Exception) -> None:
        """Shown by /healthz (its status is not ok) and /metrics; what the worker remembers of the failed cycle's
        jobs is forgotten, so that the next cycle decides on all of them again."""
        self.stats.cycle_failures += 1
        self.stats.last_cycle_failed = True
        self.stats.last_cycle_error = describe(exc)
        self.tracking.forget(None)
        try:
            status.publish(self.engine, self.epoch, self.stats, self.partition_sizes)
        except Exception:  # the database is away: the row's heartbeat ages, and /healthz says so
            log.debug("cannot publish the failed cycle", exc_info=True)

    def _stand_by(self) -> None:
        try:
            if self.lease.acquire():
                self._become_active()
                return
        except Exception:
            log.exception("standby worker: taking over failed")
            self.epoch = 0
        self._wake.wait(STANDBY_RETRY_S)
        self._wake.clear()

    def _sleep(self, seconds: float) -> None:
        """Until the interval is over, or new work arrives (woken in-process, or seen in the database)."""
        deadline = time.monotonic() + seconds
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0 or self._wake.wait(min(left, WAKE_CHECK_S)) or self.has_new_work():
                break
        self._wake.clear()

    def has_new_work(self) -> bool:
        """Accepted since the last cycle began, or a cancellation asked since: through indexes, no scan. False
        while the database is away (the next cycle reports it)."""
        try:
            with Session(self.engine) as session:
                accepted = session.exec(
                    select(Job.id).where(Job.state == JobState.ACCEPTED, col(Job.submit_time) > self._since).limit(1)
                ).first()
                if accepted is not None:
                    return True
                cancel = session.exec(
                    select(Job.id)
                    .where(col(Job.cancel_requested).is_(True), col(Job.updated_at) > self._since)
                    .limit(1)
                ).first()
                return cancel is not None
        except DBAPIError:
            return False

    # --- one cycle -----------------------------------------------------------------------------------------

    def run_cycle(self) -> bool:
        """Cancel, dispatch, then poll. Returns whether anything changed (which keeps the interval at its floor)."""
        started = time.perf_counter()
        # Rows committed during this cycle are new work; a row created just before it began may commit after
        # its queries ran, hence the margin.
        self._since = utcnow() - timedelta(seconds=0.5)
        if time.monotonic() - self._partitions_at > PARTITION_REFRESH_S:
            self.refresh_partitions()
        changed = self.cancel_requested()
        if not self._stop.is_set():
            changed |= self.dispatch()
        # A burst: what arrived while sbatch ran goes out before the poll, which can wait (the fresh jobs are
        # pending, and the poll of thousands of them costs as much as sending them); for one interval at most.
        deadline = started + self.config.poll.interval_s
        while self._sent and time.perf_counter() < deadline and not self._stop.is_set() and self.has_new_work():
            self.dispatch()
        if not self._stop.is_set():
            changed |= self.tracking.poll()
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
            self.tracking.scancelled(jobs)
            session.commit()
            return True

    def dispatch(self) -> bool:
        if not self._reconciled:  # Slurm did not answer, or a crash's sbatch may still land: look again
            self._reconciled = reconcile(self.engine, self.config.poll.dispatch_grace_s, self.config.unix_user_of)
        with Session(self.engine, expire_on_commit=False) as session, collection_paused():
            outcome = self.dispatcher.run(session)
        self._sent = outcome is Outcome.QUEUED
        return outcome in (Outcome.QUEUED, Outcome.REFUSED)

    def health(self, detailed: bool = False) -> dict[str, Any]:
        alive = self._thread is not None and self._thread.is_alive()
        return status.health(self.stats, alive, holder_name() if self.active else None, self.epoch, detailed)
