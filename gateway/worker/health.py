"""The worker's side of run health: gather each running job's evidence, ask gateway.run_health for a verdict, and
carry it out. No Slurm call is made to find out: the metrics are already loaded, and the heartbeats are small
files in the job folder. Only a verdict costs a command (scancel with the cycle's cancellations, or a requeue).

A stop sets the job's verdict and asks for a cancellation, which the worker sends with the others in one
scancel per user; when Slurm reports the job CANCELLED, its state becomes the verdict (hung, diverged,
stopped_early). A requeue is `scontrol requeuehold`, `update ExcNodeList`, `release`, as the job's user, and is
recorded on the attempt it ended.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from gateway.config import GatewayConfig
from gateway.run_health import HealthPolicy, Verdict, evaluate, last_progress, needs_heartbeats, plateau
from gateway.store.models import Job, JobAttempt
from gateway.submit.job_requests import record_state
from launchers.runtime.markers import JobMarkers
from launchers.slurm import commands
from launchers.slurm.hostlist import expand_hostlist
from launchers.slurm.shell import CommandError
from launchers.states import JobState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Requeue:
    job_id: str
    slurm_job_id: str
    user: str
    restarts: int
    verdict: Verdict
    exclude: tuple[str, ...]


class HealthGuard:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.requeues: list[Requeue] = []
        self.stopped = False  # a verdict this cycle asked for a cancellation
        self._requeued: dict[str, int] = {}  # job id -> the run it requeued, until Slurm shows the next one
        self._beats: dict[str, tuple[float, int, dict[int, dict[str, Any]]]] = {}  # job id -> (read at, run, files)
        self._policies: dict[str, HealthPolicy] = {}
        self._plateaus: dict[str, tuple[tuple[int, str], tuple[int | None, Verdict | None]]] = {}

    def check(self, job: Job, started: dict[str, Any] | None, node_list: str, now: datetime) -> None:
        """Decide on one running job (the caller writes the row); a requeue waits for :meth:`carry_out`."""
        if not job.health or job.health_verdict or job.cancel_requested or job.state != JobState.RUNNING:
            return
        if started is None or started.get("restart", 0) != job.restarts or not job.slurm_job_id:
            return  # the run that started is not the run Slurm reports: its evidence is an older run's
        if self._requeued.get(job.id) == job.restarts:
            return  # asked already; accounting has not shown the next run yet
        policy = self._policies.get(job.id)
        if policy is None:  # a job's policy is fixed at submission: parsed once, not at every cycle
            policy = self._policies[job.id] = HealthPolicy.model_validate(job.health)
        started_at = _number(started.get("time"))
        assessment = evaluate(
            policy,
            job.metrics,
            self._heartbeats(job, policy, started_at, now.timestamp()),
            started_at,
            now.timestamp(),
            restarts_used=job.health_restarts,
            may_requeue=job.requeue,
            stalled=self._plateau(job, policy),
        )
        if assessment.best_epoch != job.best_epoch:
            job.best_epoch = assessment.best_epoch
        verdict = assessment.verdict
        if verdict is None:
            return
        log.warning("job %s (Slurm %s): %s; action %s", job.id, job.slurm_job_id, verdict.reason, verdict.action)
        job.health_reason = verdict.reason[:512]  # the column's bound (PostgreSQL refuses a longer value)
        if verdict.action == "stop":
            job.health_verdict = verdict.state.value
            job.cancel_requested = True  # scancel'd with the cycle's other cancellations
            self.stopped = True
            return
        # Only nodes the run really had: a heartbeat file is the job's own writing.
        ran_on = set(expand_hostlist(node_list)) if node_list else set()
        exclude = sorted({*(_split(job.excluded_nodes)), *(h for h in verdict.exclude if h in ran_on)})
        user = self.config.unix_user_of(job.user)
        self.requeues.append(Requeue(job.id, job.slurm_job_id, user, job.restarts, verdict, tuple(exclude)))

    def _heartbeats(
        self, job: Job, policy: HealthPolicy, started_at: float | None, now: float
    ) -> dict[int, dict[str, Any]]:
        """The ranks' heartbeat files, read at most once per heartbeat interval: a newer file could only make the
        job look more alive, so between two reads only a hang that the last read already suggests needs a look
        now. 1,000 jobs x 4 ranks cost 4,000 file reads when read every cycle (bench/health.py)."""
        if not needs_heartbeats(policy) or not job.slurm_job_id:
            return {}
        cached = self._beats.get(job.id)
        if cached is not None and cached[1] == job.restarts and now - cached[0] < policy.heartbeat_s:
            timeout = policy.hang_timeout_s
            if timeout is None or started_at is None or now - last_progress(cached[2], started_at)[0] <= timeout:
                return cached[2]
        markers = JobMarkers(Path(job.submit_folder), job.slurm_job_id, root=self.config.job_root)
        beats = markers.heartbeats(job.restarts, job.nodes * job.tasks_per_node)
        self._beats[job.id] = (now, job.restarts, beats)
        return beats

    def _plateau(self, job: Job, policy: HealthPolicy) -> tuple[int | None, Verdict | None]:
        """Early stopping reads every epoch; the metrics change once an epoch, the cycles come every second."""
        key = (len(job.metrics), repr(job.metrics[-1]) if job.metrics else "")
        cached = self._plateaus.get(job.id)
        if cached is None or cached[0] != key:
            cached = self._plateaus[job.id] = (key, plateau(policy, job.metrics))
        return cached[1]

    def carry_out(self, engine: Engine) -> bool:
        """The requeues this cycle decided on, after the cycle's rows are committed."""
        pending, self.requeues = self.requeues, []
        for request in pending:
            try:
                commands.requeue_elsewhere(request.slurm_job_id, request.exclude, as_user=request.user)
            except CommandError as exc:
                log.warning("requeue of %s failed, will decide again: %s", request.slurm_job_id, exc)
                continue
            self._requeued[request.job_id] = request.restarts
            with Session(engine, expire_on_commit=False) as session:
                job = session.get(Job, request.job_id)
                if job is None:
                    continue
                job.health_restarts += 1
                job.excluded_nodes = _bounded(request.exclude) or job.excluded_nodes
                excluded = f"; the next run excludes {', '.join(request.exclude)}" if request.exclude else ""
                note = f"{request.verdict.reason}; requeued by the health policy{excluded}"
                attempt = session.exec(
                    select(JobAttempt).where(JobAttempt.job_id == job.id, JobAttempt.number == request.restarts)
                ).first() or JobAttempt(
                    job_id=job.id, number=request.restarts, slurm_job_id=request.slurm_job_id, slurm_state="RUNNING"
                )
                attempt.ended_by = note[:512]
                session.add(attempt)
                job.reason = note[:256]
                record_state(session, job, JobState.REQUEUED, reason=job.reason)
                session.commit()
        return bool(pending)

    def forget(self, job_id: str) -> None:
        self._requeued.pop(job_id, None)
        self._beats.pop(job_id, None)
        self._policies.pop(job_id, None)
        self._plateaus.pop(job_id, None)


def read_provenance(job: Job, root: Path | None = None) -> dict[str, Any] | None:
    """What rank 0 recorded at the end of a successful run (launchers.runtime.provenance), its fields checked;
    read from ``root`` (the job root) without following a link."""
    if not job.slurm_job_id:
        return None
    return JobMarkers(Path(job.submit_folder), job.slurm_job_id, root=root).provenance()


def _bounded(nodes: tuple[str, ...], limit: int = 1024) -> str:
    """The excluded nodes as the column can hold them: whole names only (Slurm has the full list)."""
    text = ",".join(nodes)
    return text if len(text) <= limit else text[:limit].rsplit(",", 1)[0]


def _split(nodes: str | None) -> list[str]:
    return [n for n in (nodes or "").split(",") if n]


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
