"""The single background worker: releases accepted jobs to Slurm within each team's quota, and tracks every
active job with one sacct call per cycle (plus at most one squeue for pending reasons and queue positions).

HTTP handlers never call Slurm; they read what this worker wrote. The interval adapts: a submission wakes the
worker at once and drops the interval to the floor, and quiet cycles double it up to the configured interval.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from gateway.config import GatewayConfig
from gateway.jobs import (
    ACTIVE_IN_SLURM,
    active_counts,
    job_id_from_comment,
    job_spec,
    record_state,
    slurm_comment,
    sweep_comment,
)
from gateway.models import Job, Sweep, utcnow
from gateway.slurmview import Observations, find_by_comment, observe, partition_sizes
from launchers.markers import JobMarkers
from launchers.shell import CommandError, CommandNotFoundError, CommandTimeoutError, run
from launchers.slurm import slurm_env
from launchers.states import JobState, from_slurm
from launchers.submit import SubmitError, submit
from launchers.sweep import max_array_size, submit_array

log = logging.getLogger(__name__)

# sbatch errors that mean "Slurm is not answering right now", as opposed to "Slurm refused this job".
_TRANSIENT = (
    "Unable to contact slurm controller",
    "Socket timed out",
    "Connection refused",
    "Zero Bytes",
    "Transport endpoint",
    "try again",
    "not responding",
)
PARTITION_REFRESH_S = 300.0


@dataclass
class TrackerStats:
    cycles: int = 0
    poll_cycles: int = 0
    slurm_commands: int = 0
    last_cycle_s: float = 0.0
    cycle_s_sum: float = 0.0
    accounting_ok: bool = True
    source: str = "sacct"
    slurm_reachable: bool = True
    last_error: str | None = None
    interval_s: float = 0.0
    dispatched: int = 0
    failures_by_team: dict[str, int] = field(default_factory=dict)


def prepare_folders(job: Job) -> None:
    """The trainer protocol promises existing directories for MODEL_OUTPUT_DIR and the METRICS_FILE."""
    (Path(job.folder) / "model").mkdir(parents=True, exist_ok=True)
    Path(job.submit_folder).mkdir(parents=True, exist_ok=True)


class Tracker:
    def __init__(self, engine: Engine, config: GatewayConfig) -> None:
        self.engine = engine
        self.config = config
        self.stats = TrackerStats(interval_s=config.poll.floor_s)
        self.partition_sizes: dict[str, tuple[int, int]] = {}
        self.max_array_size: int | None = None
        self._partitions_at = 0.0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._metrics_seen: dict[str, tuple[float, int]] = {}

    # --- life cycle ----------------------------------------------------------------------------------------

    def start(self) -> None:
        self.refresh_partitions()
        self.reconcile()
        self._thread = threading.Thread(target=self._loop, name="hpcgw-tracker", daemon=True)
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
                log.exception("tracker cycle failed")
            floor, ceiling = self.config.poll.floor_s, self.config.poll.interval_s
            self.stats.interval_s = floor if busy else min(max(self.stats.interval_s, floor) * 2, ceiling)
            self._wake.wait(self.stats.interval_s)
            self._wake.clear()

    # --- one cycle -----------------------------------------------------------------------------------------

    def run_cycle(self) -> bool:
        """Dispatch, then poll. Returns whether anything changed (which keeps the interval at its floor)."""
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
            self.partition_sizes = partition_sizes()
            self.max_array_size = max_array_size()
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
                run(["scancel", *[j.slurm_job_id for j in jobs if j.slurm_job_id]], env=slurm_env(), timeout_s=60)
            except CommandError as exc:
                log.warning("scancel failed, will retry: %s", str(exc).splitlines()[0])
                return False
            for job in jobs:
                job.cancel_requested = False
                session.add(job)
            session.commit()
            return True

    def dispatch(self) -> bool:
        """Release accepted jobs, oldest first per team, while the team is under its quota."""
        dispatched = False
        with Session(self.engine, expire_on_commit=False) as session:
            outcome = self._dispatch_sweeps(session)
            if outcome == "unreachable":
                return False
            dispatched = outcome is not None
            for team_name, team in self.config.teams.items():
                waiting = session.exec(
                    select(Job)
                    .where(Job.team == team_name, Job.state == JobState.ACCEPTED.value, col(Job.sweep_id).is_(None))
                    .order_by(col(Job.submit_time), col(Job.id))
                ).all()
                if not waiting:
                    continue
                running, gpus = active_counts(session, team_name)
                for job in waiting:
                    if running >= team.max_running_jobs or gpus + job.gpus > team.max_gpus:
                        break  # in order: a later, smaller job does not overtake
                    outcome = self._dispatch_one(session, job)
                    if outcome == "unreachable":
                        return dispatched
                    dispatched = True
                    if outcome == "queued":
                        running, gpus = running + 1, gpus + job.gpus
        return dispatched

    def _dispatch_sweeps(self, session: Session) -> str | None:
        """Each (sweep, attempt) still waiting goes out as one job array: one sbatch per MaxArraySize tasks."""
        waiting = session.exec(
            select(Job)
            .where(
                Job.state == JobState.ACCEPTED.value, col(Job.sweep_id).is_not(None), col(Job.dispatching).is_(False)
            )
            .order_by(col(Job.sweep_id), col(Job.attempt), col(Job.task_index))
        ).all()
        groups: dict[tuple[str, int], list[Job]] = {}
        for job in waiting:
            groups.setdefault((job.sweep_id or "", job.attempt), []).append(job)
        outcome = None
        for (sweep_id, attempt), tasks in groups.items():
            outcome = self._dispatch_array(session, sweep_id, attempt, tasks)
            if outcome == "unreachable":
                return outcome
        return outcome

    def _dispatch_array(self, session: Session, sweep_id: str, attempt: int, tasks: list[Job]) -> str:
        sweep = session.get(Sweep, sweep_id)
        if sweep is None:
            return "failed"
        for job in tasks:
            job.dispatching = True
            session.add(job)
        session.commit()
        try:
            for job in tasks:
                prepare_folders(job)
            specs = [job_spec(self.config, job) for job in tasks]
            base = specs[0].model_copy(update={"comment": sweep_comment(sweep_id, attempt)})
            handles = submit_array(
                base, [s.env for s in specs], sweep.max_parallel, check=False, array_size=self.max_array_size
            )
        except (SubmitError, CommandError, ValueError, OSError) as exc:
            return self._dispatch_failed(session, tasks, exc)
        if os.environ.get("HPCGW_TEST_CRASH_AFTER_SBATCH") == "1":
            os._exit(97)
        masters = list(dict.fromkeys(h.job_id.split("_", 1)[0] for h in handles))
        sweep.array_ids = [*sweep.array_ids, *masters]
        session.add(sweep)
        for job, handle in zip(tasks, handles, strict=True):
            self._link(session, job, handle.job_id, commit=False)
        session.commit()
        self.stats.slurm_reachable = True
        self.stats.dispatched += len(tasks)
        log.info(
            "sweep %s attempt %d submitted as array(s) %s (%d tasks, at most %d at once)",
            sweep_id,
            attempt,
            ",".join(masters),
            len(tasks),
            sweep.max_parallel,
        )
        return "queued"

    def _dispatch_failed(self, session: Session, jobs: list[Job], exc: Exception) -> str:
        """Slurm unreachable: the jobs stay accepted for the next cycle. Slurm refused them: they failed."""
        text = str(exc)
        transient = isinstance(exc, CommandNotFoundError | CommandTimeoutError) or any(t in text for t in _TRANSIENT)
        for job in jobs:
            job.dispatching = False
            job.dispatch_error = text[-2000:]
            if not transient:
                record_state(session, job, JobState.FAILED, reason=f"sbatch refused the job: {text.splitlines()[-1]}")
                job.end_time = utcnow()
            session.add(job)
        session.commit()
        if transient:
            self.stats.slurm_reachable = False
            self.stats.last_error = text.splitlines()[0]
            log.warning("Slurm unreachable; %d job(s) stay accepted: %s", len(jobs), self.stats.last_error)
            return "unreachable"
        log.error("sbatch refused %d job(s): %s", len(jobs), text)
        return "failed"

    def _dispatch_one(self, session: Session, job: Job) -> str:
        job.dispatching = True  # committed first: after a crash, reconciliation looks in Slurm before resubmitting
        session.add(job)
        session.commit()
        try:
            prepare_folders(job)
            handle = submit(job_spec(self.config, job), backend="slurm", check=False)
        except (SubmitError, CommandError, ValueError, OSError) as exc:
            return self._dispatch_failed(session, [job], exc)
        if os.environ.get("HPCGW_TEST_CRASH_AFTER_SBATCH") == "1":
            os._exit(97)  # test hook: die between sbatch and the database update
        self._link(session, job, handle.job_id)
        self.stats.slurm_reachable = True
        self.stats.dispatched += 1
        log.info("job %s (team %s) submitted as Slurm job %s", job.id, job.team, handle.job_id)
        return "queued"

    def _link(self, session: Session, job: Job, slurm_job_id: str, commit: bool = True) -> None:
        job.slurm_job_id = slurm_job_id
        job.dispatching = False
        job.dispatch_error = None
        job.slurm_submit_time = utcnow()
        job.slurm_state = "PENDING"
        record_state(session, job, JobState.QUEUED, slurm_state="PENDING")
        if commit:
            session.commit()

    def reconcile(self) -> None:
        """At start-up: adopt Slurm jobs that carry our id but were never linked (a crash after sbatch)."""
        with Session(self.engine, expire_on_commit=False) as session:
            orphans = session.exec(
                select(Job).where(col(Job.dispatching).is_(True), col(Job.slurm_job_id).is_(None))
            ).all()
            if not orphans:
                return
            try:
                found = find_by_comment("hpcgw:")
            except CommandError as exc:
                log.warning("reconciliation could not ask Slurm (%s); will retry at next start", exc)
                return
            arrays: dict[tuple[str, int], list[Job]] = {}
            for job in orphans:
                if job.sweep_id is not None:
                    arrays.setdefault((job.sweep_id, job.attempt), []).append(job)
                    continue
                slurm_id = found.get(slurm_comment(job.id))
                if slurm_id is not None:
                    log.warning("adopting Slurm job %s for job %s (submitted before a crash)", slurm_id, job.id)
                    self._link(session, job, slurm_id)
                else:
                    job.dispatching = False  # never reached Slurm: submit it again
                    session.add(job)
                    session.commit()
            for (sweep_id, attempt), tasks in arrays.items():
                master = found.get(sweep_comment(sweep_id, attempt))
                for position, job in enumerate(sorted(tasks, key=lambda j: j.task_index or 0)):
                    if master is not None:  # one array per attempt below MaxArraySize: element k is task k
                        self._link(session, job, f"{master}_{position}", commit=False)
                    else:
                        job.dispatching = False
                        session.add(job)
                if master is not None:
                    log.warning("adopting Slurm array %s for sweep %s attempt %d", master, sweep_id, attempt)
                    sweep = session.get(Sweep, sweep_id)
                    if sweep is not None and master not in sweep.array_ids:
                        sweep.array_ids = [*sweep.array_ids, master]
                        session.add(sweep)
                session.commit()
            unknown = [c for c in found if job_id_from_comment(c) and session.get(Job, job_id_from_comment(c)) is None]
            if unknown:  # another gateway's jobs, or a database that was replaced: worth one line, not thousands
                log.warning(
                    "%d Slurm jobs carry hpcgw comments this database does not know (e.g. %s)", len(unknown), unknown[0]
                )

    def poll(self) -> bool:
        with Session(self.engine, expire_on_commit=False) as session:
            active = session.exec(
                select(Job).where(col(Job.state).in_(ACTIVE_IN_SLURM), col(Job.slurm_job_id).is_not(None))
            ).all()
            if not active:
                return False
            want_pending = any(j.state == JobState.QUEUED.value for j in active)
            obs = observe(
                [j.slurm_job_id for j in active if j.slurm_job_id],
                want_pending=want_pending,
                chunk=self.config.poll.sacct_chunk,
            )
            self._record_health(obs)
            changed = False
            for job in active:
                changed |= self._apply(session, job, obs)
            session.commit()
            return changed

    def _record_health(self, obs: Observations) -> None:
        self.stats.poll_cycles += 1
        self.stats.slurm_commands += obs.commands
        self.stats.accounting_ok = obs.accounting_ok
        self.stats.source = obs.source
        if obs.error:
            self.stats.last_error = obs.error

    def _apply(self, session: Session, job: Job, obs: Observations) -> bool:
        seen = obs.jobs.get(job.slurm_job_id or "")
        pending = obs.pending.get(job.slurm_job_id or "")
        before = (job.state, job.slurm_state, job.reason, job.position_in_queue, len(job.metrics))
        markers = JobMarkers(Path(job.submit_folder), job.slurm_job_id or "")
        if seen is None:
            if pending is not None:  # in slurmctld, not yet in accounting
                job.reason, job.position_in_queue = pending.reason, pending.position
            return before != (job.state, job.slurm_state, job.reason, job.position_in_queue, len(job.metrics))
        started = markers.started()
        state = from_slurm(seen.slurm_state, started=started is not None)
        if state.is_terminal and not seen.settled:
            return False  # accounting is still filling the record in; look again next cycle
        job.slurm_state = seen.slurm_state
        job.restarts = int(started["restart"]) if started else job.restarts
        job.start_time = seen.start or job.start_time
        if state is JobState.QUEUED:
            job.reason = pending.reason if pending else seen.reason
            job.position_in_queue = pending.position if pending else None
        else:
            job.position_in_queue = None
            job.reason = seen.reason if state.is_terminal else None
        if state in (JobState.RUNNING,) or state.is_terminal:
            self._read_metrics(job)
        if state.is_terminal:
            failure = markers.first_failure()
            job.exit_code = failure[1] if failure else seen.exit_code
            job.end_time = seen.end or utcnow()
            if state is not JobState.SUCCEEDED:
                self.stats.failures_by_team[job.team] = self.stats.failures_by_team.get(job.team, 0) + 1
        # A poll can miss a short phase; the evidence still says it happened (Slurm's start time, the start
        # marker), so the history records it rather than jumping from queued to running.
        progression = [JobState.QUEUED, JobState.LAUNCHING, JobState.RUNNING]
        if JobState(job.state) in progression and state not in (JobState.QUEUED, JobState.CANCELLED):
            evidence = {JobState.LAUNCHING: seen.start is not None, JobState.RUNNING: started is not None}
            for step in progression[progression.index(JobState(job.state)) + 1 :]:
                if step is state or not evidence[step]:
                    break
                record_state(session, job, step, slurm_state="RUNNING")
        record_state(session, job, state, slurm_state=seen.slurm_state, reason=job.reason)
        return before != (job.state, job.slurm_state, job.reason, job.position_in_queue, len(job.metrics))

    def _read_metrics(self, job: Job) -> None:
        path = Path(job.folder) / "metrics.jsonl"
        try:
            stat = path.stat()
        except FileNotFoundError:
            return
        key = (stat.st_mtime, stat.st_size)
        if self._metrics_seen.get(job.id) == key:
            return
        epochs: list[dict[str, Any]] = []
        for line in path.read_text(errors="replace").splitlines():
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line being written right now; complete next cycle
            if isinstance(value, dict):
                epochs.append(value)
        job.metrics = epochs
        self._metrics_seen[job.id] = key

    def health(self) -> dict[str, Any]:
        s = self.stats
        return {
            "tracker_alive": self._thread is not None and self._thread.is_alive(),
            "accounting": "ok" if s.accounting_ok else "unavailable: tracking through squeue and scontrol",
            "tracking_source": s.source,
            "slurm_reachable": s.slurm_reachable,
            "cycles": s.cycles,
            "poll_cycles": s.poll_cycles,
            "slurm_commands": s.slurm_commands,
            "interval_s": s.interval_s,
            "last_error": s.last_error,
        }
