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
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from gateway.config import GatewayConfig
from gateway.jobs import ACTIVE_IN_SLURM, record_state
from gateway.models import Job, utcnow
from gateway.worker.apply import Evidence, Transition, decide
from gateway.worker.dispatch import Dispatcher, Outcome
from gateway.worker.metrics import MetricsReader
from gateway.worker.observe import Observations, observe
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
        self.dispatcher = Dispatcher(config, self.stats)
        self.metrics = MetricsReader()
        self.partition_sizes: dict[str, PartitionSize] = {}
        self._partitions_at = 0.0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- life cycle ----------------------------------------------------------------------------------------

    def start(self) -> None:
        if self.config.slurm_conf is not None:  # this process's Slurm commands talk to the configured cluster
            os.environ["SLURM_CONF"] = str(self.config.slurm_conf)
        self.refresh_partitions()
        reconcile(self.engine)
        self._thread = threading.Thread(target=self._loop, name="hpcgw-worker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
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
        changed |= self.dispatch()
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
            try:
                commands.scancel(j.slurm_job_id for j in jobs if j.slurm_job_id)
            except CommandError as exc:
                log.warning("scancel failed, will retry: %s", str(exc).splitlines()[0])
                return False
            for job in jobs:
                job.cancel_requested = False
                session.add(job)
            session.commit()
            return True

    def dispatch(self) -> bool:
        with Session(self.engine, expire_on_commit=False) as session:
            return self.dispatcher.run(session) in (Outcome.QUEUED, Outcome.REFUSED)

    def poll(self) -> bool:
        with Session(self.engine, expire_on_commit=False) as session:
            active = session.exec(
                select(Job).where(col(Job.state).in_(ACTIVE_IN_SLURM), col(Job.slurm_job_id).is_not(None))
            ).all()
            if not active:
                return False
            obs = observe(
                [j.slurm_job_id for j in active if j.slurm_job_id],
                want_pending=any(j.state == JobState.QUEUED.value for j in active),
                chunk=self.config.poll.sacct_chunk,
            )
            self._record_health(obs)
            changed = False
            for job in active:
                changed |= self.apply(session, job, obs)
            session.commit()
            return changed

    def _record_health(self, obs: Observations) -> None:
        self.stats.poll_cycles += 1
        self.stats.slurm_commands += obs.commands
        self.stats.accounting_ok = obs.accounting_ok
        self.stats.source = obs.source
        if obs.error:
            self.stats.last_error = obs.error

    def apply(self, session: Session, job: Job, obs: Observations) -> bool:
        """Gather the job's evidence, decide, write. Returns whether anything the API shows changed."""
        slurm_id = job.slurm_job_id or ""
        seen = obs.jobs.get(slurm_id)
        markers = JobMarkers(Path(job.submit_folder), slurm_id)
        terminal = seen is not None and seen.settled and from_slurm(seen.slurm_state).is_terminal
        evidence = Evidence(
            seen=seen,
            pending=obs.pending.get(slurm_id),
            started=markers.started() if seen is not None else None,
            first_failure=markers.first_failure() if terminal else None,
        )
        transition = decide(job, evidence, utcnow())
        return self.write(session, job, transition)

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
