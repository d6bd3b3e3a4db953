"""One job's part of a poll: gather its evidence (Slurm's records, the files in its folder, what the tracker
remembers of it), decide, write. The verdicts are decide()'s (gateway.worker.apply), so that every rule is tested
without a database; what is remembered between cycles is staged until the write is committed
(gateway.worker.isolation), so that a rolled-back write leaves no memory of it.

A base of gateway.worker.tracker.Tracker, which holds the state named below.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, select

from gateway.config import GatewayConfig
from gateway.store.models import Job, aware
from gateway.submit.job_requests import record_state
from gateway.worker.apply import Evidence, Transition, decide
from gateway.worker.attempts import AttemptRecorder
from gateway.worker.health import HealthGuard, read_provenance
from gateway.worker.isolation import AfterCommit, Isolation
from gateway.worker.metrics import MetricsReader
from gateway.worker.observe import Observations
from gateway.worker.stats import WorkerStats
from launchers.runtime.markers import JobMarkers
from launchers.states import JobState, from_slurm

WAITING_IN_SLURM = frozenset({JobState.QUEUED, JobState.REQUEUED})


class JobApplier:
    config: GatewayConfig
    stats: WorkerStats
    metrics: MetricsReader
    attempts: AttemptRecorder
    guard: HealthGuard
    isolation: Isolation
    stopping: Callable[[], bool]  # the worker is stopping: leave the rest for the next start
    _last_seen: dict[str, datetime]  # Slurm id -> when this worker last saw it in Slurm
    _unchanged: dict[str, tuple[object, ...]]  # job id -> what Slurm said of it, while it waits
    _vanishing: set[str]  # array elements scancel'd while waiting

    def _apply_jobs(
        self, session: Session, job_ids: list[str], obs: Observations, now: datetime, staged: AfterCommit
    ) -> bool:
        changed = False
        self.attempts.prefetch(session, job_ids)
        for job in session.exec(select(Job).where(col(Job.id).in_(job_ids))).all():
            if self.stopping():
                break  # shutting down: what is written stays consistent, the rest waits for the next start
            changed |= self.apply(session, job, obs, now, staged)
        self.attempts.flush(session)
        return changed

    def _unchanged_since(self, job: Any, obs: Observations, now: datetime, staged: AfterCommit) -> bool:
        """A job waiting in Slurm has no markers and no metrics: when Slurm says of it exactly what it said last
        cycle, nothing can change, and 10,000 pending jobs cost a comparison each, not a load, a decision and a
        write."""
        slurm_id = job.slurm_job_id or ""
        seen, pending = obs.jobs.get(slurm_id), obs.pending.get(slurm_id)
        if seen is None or job.state not in WAITING_IN_SLURM:
            self._unchanged.pop(job.id, None)
            return False
        self._last_seen[slurm_id] = now
        key = (job.state, seen, pending)
        if self._unchanged.get(job.id) == key:
            return True
        job_id = job.id
        staged.add(job_id, lambda: self._unchanged.__setitem__(job_id, key))  # once the decision is committed
        return False

    def _overdue(self, job: Any, now: datetime) -> bool:
        """In Slurm for longer than the lost grace: slurmctld is asked about it if never seen, and decide() may
        call it lost."""
        submitted = aware(job.slurm_submit_time)
        return submitted is not None and (now - submitted).total_seconds() > self.config.poll.lost_after_s

    def apply(self, session: Session, job: Job, obs: Observations, now: datetime, staged: AfterCommit) -> bool:
        """Gather the job's evidence, decide, write. Returns whether anything the API shows changed. What the
        tracker remembers of it is ``staged``, for after the commit."""
        job_id, slurm_id = job.id, job.slurm_job_id or ""
        seen = obs.jobs.get(slurm_id)
        pending = obs.pending.get(slurm_id)
        if seen is not None or pending is not None:
            self._last_seen[slurm_id] = now
        markers = JobMarkers(Path(job.submit_folder), slurm_id, root=self.config.job_root)
        terminal = seen is not None and seen.settled and from_slurm(seen.slurm_state).is_terminal
        submitted = aware(job.slurm_submit_time)
        held = obs.known_to_controller  # None: slurmctld was not asked this cycle
        evidence = Evidence(
            seen=seen,
            pending=pending,
            started=markers.started() if seen is not None else None,
            first_failure=markers.first_failure() if terminal else None,
            verdict=(JobState(job.health_verdict), job.health_reason or "") if job.health_verdict else None,
            vanishing=slurm_id in self._vanishing,
            ever_seen=slurm_id in self._last_seen,
            lost_after_s=(now - submitted).total_seconds() if submitted and self._overdue(job, now) else None,
            accounting_ok=obs.accounting_ok,
            controller_holds=held is None or slurm_id in held,
        )
        transition = decide(job, evidence, now)
        if seen is not None and seen.attempts:
            self.attempts.record(session, job, seen)
        changed = self.write(session, job, transition, staged)
        if transition.state is not None and transition.state.is_terminal:
            job.provenance = read_provenance(job, self.config.job_root)  # every finished run: to run it again
            staged.add(job_id, lambda: self._ended(job_id, slurm_id))
        self.guard.check(job, evidence.started, seen.node_list if seen else "", now)
        if job.tracking_error is not None:  # applied cleanly again
            job.tracking_error = None
            session.add(job)
        staged.add(job_id, lambda: self.isolation.cleared(job_id))
        return changed

    def _ended(self, job_id: str, slurm_id: str) -> None:
        self._last_seen.pop(slurm_id, None)
        self._vanishing.discard(slurm_id)
        self.guard.forget(job_id)

    def write(self, session: Session, job: Job, transition: Transition, staged: AfterCommit) -> bool:
        before = (job.state, job.slurm_state, job.reason, job.position_in_queue, len(job.metrics))
        for name, value in transition.fields.items():
            if getattr(job, name) != value:  # an equal value set is still a dirty attribute, flushed for nothing
                setattr(job, name, value)
        if transition.read_metrics:
            epochs = self.metrics.read(job.id, Path(job.folder) / "metrics.jsonl", root=self.config.job_root)
            if epochs is not None:
                job.metrics = epochs
        for state, slurm_state, reason in transition.history:
            record_state(session, job, state, slurm_state=slurm_state, reason=reason)
        final = transition.state
        if final is not None and final.is_terminal and final not in (JobState.SUCCEEDED, JobState.STOPPED_EARLY):
            team = job.team
            staged.add(job.id, lambda: self._count_failure(team))
        after = (job.state, job.slurm_state, job.reason, job.position_in_queue, len(job.metrics))
        if after != before:
            session.add(job)
        return after != before

    def _count_failure(self, team: str) -> None:
        self.stats.failures_by_team[team] = self.stats.failures_by_team.get(team, 0) + 1

    def _undo(self, staged: AfterCommit) -> Callable[[list[str]], None]:
        def undo(job_ids: list[str]) -> None:  # their writes were rolled back
            staged.drop(job_ids)
            self.forget(job_ids)

        return undo

    def forget(self, job_ids: list[str] | None) -> None:
        """Drop what the tracker remembers of these jobs (all when None) from a write that was rolled back."""
        if job_ids is None:
            self._unchanged.clear()
            self.guard.requeues.clear()
        else:
            for job_id in job_ids:
                self._unchanged.pop(job_id, None)
            dropped = set(job_ids)
            self.guard.requeues = [r for r in self.guard.requeues if r.job_id not in dropped]
        self.metrics.forget(job_ids)
        self.attempts.forget(job_ids)
