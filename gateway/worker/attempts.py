"""One row per run of a job (``sacct -D``): a requeue runs the same Slurm id again, and each run keeps its
nodes, times and end state. Rows are written only when a run was added or changed."""

from __future__ import annotations

from sqlmodel import Session, select

from gateway.models import Job, JobAttempt
from gateway.worker.observe import JobObservation


class AttemptRecorder:
    def __init__(self) -> None:
        self._seen: dict[str, tuple[object, ...]] = {}

    def record(self, session: Session, job: Job, seen: JobObservation) -> None:
        key = tuple((a.slurm_state, a.node_list, a.start, a.end) for a in seen.attempts)
        if self._seen.get(job.id) == key:
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
        self._seen[job.id] = key
