"""At start-up and at each take-over: adopt the Slurm jobs that carry our id in their comment but were never
linked to their row (a worker died between sbatch and the database update), and release the rows that never
reached Slurm.

A row is released only once its sbatch cannot land any more: a worker killed by SIGKILL leaves its sbatch child
running, and that child may still reach Slurm a moment after another worker has looked. Until ``grace_s`` after
the row was marked, an orphan that Slurm does not show is looked for again at the next cycle, not resubmitted.

Comments are public: any cluster user can give a job of theirs the comment ``hpcgw:<someone's id>``. A job is
adopted only if it also runs as the row's Unix user, in the row's account, and was submitted after the row was
marked for dispatch; any other job with our comment is left alone (and logged)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from gateway.store.models import Job, Sweep, aware, utcnow
from gateway.submit.comments import batch_comment, job_id_from_comment, slurm_comment, sweep_comment
from gateway.worker.dispatch import unbatch
from gateway.worker.linking import link
from launchers.slurm.commands import Found, find_by_comment
from launchers.slurm.ids import element_id
from launchers.slurm.shell import CommandError
from launchers.submission import finish_interrupted_array, finish_interrupted_submission

log = logging.getLogger(__name__)
SUBMIT_SLACK = timedelta(minutes=5)  # clock skew between the gateway and slurmctld


def _same_user(user: str) -> str:
    return user


def pick(
    found: Mapping[str, list[Found]], comment: str, jobs: list[Job], unix_user_of: Callable[[str], str]
) -> str | None:
    """The Slurm job that carries ``comment`` and is really the gateway's for ``jobs``: their user, their
    account, submitted no earlier than they were marked for dispatch."""
    first = jobs[0]
    user, account = unix_user_of(first.user), first.account.lower()
    marks = [aware(j.dispatch_time or j.submit_time) for j in jobs]
    since: datetime = min(marks) - SUBMIT_SLACK
    for candidate in found.get(comment, []):
        if candidate.user == user and candidate.account.lower() == account:
            if candidate.submit is not None and candidate.submit >= since:
                return candidate.job_id
        log.warning(
            "not adopting Slurm job %s for %s: user %r, account %r, submitted %s (expected %r, %r, after %s)",
            candidate.job_id,
            comment,
            candidate.user,
            candidate.account,
            candidate.submit,
            user,
            account,
            since,
        )
    return None


def reconcile(engine: Engine, grace_s: float = 0.0, unix_user_of: Callable[[str], str] = _same_user) -> bool:
    """Returns False when Slurm could not be asked, or when some rows are still within their grace: those stay
    marked, and the caller asks again at its next cycle. ``unix_user_of``: the Unix user a gateway user's jobs
    run as (the configuration's mapping)."""
    with Session(engine, expire_on_commit=False) as session:
        orphans = session.exec(select(Job).where(col(Job.dispatching).is_(True), col(Job.slurm_job_id).is_(None))).all()
        if not orphans:
            return True
        try:
            found = find_by_comment("hpcgw:")
        except CommandError as exc:
            log.warning("reconciliation could not ask Slurm (%s); will retry", str(exc).splitlines()[0])
            return False
        now = utcnow()
        waiting = False  # some rows are within their grace: look again next cycle

        def settled(jobs: list[Job]) -> bool:
            nonlocal waiting
            marked = [j.dispatch_time for j in jobs if j.dispatch_time is not None]
            recent = any((now - aware(t)).total_seconds() < grace_s for t in marked)
            waiting |= recent
            return not recent

        arrays: dict[tuple[str, int], list[Job]] = {}
        batches: dict[str, list[Job]] = {}
        for job in orphans:
            if job.sweep_id is not None:
                arrays.setdefault((job.sweep_id, job.attempt), []).append(job)
                continue
            if job.batch_id is not None:
                batches.setdefault(job.batch_id, []).append(job)
                continue
            slurm_id = pick(found, slurm_comment(job.id), [job], unix_user_of)
            if slurm_id is not None:
                log.warning("adopting Slurm job %s for job %s (submitted before a crash)", slurm_id, job.id)
                link(session, job, slurm_id)
                if finish_interrupted_submission(Path(job.submit_folder), slurm_id):
                    log.warning("job %s: its pickle was left under its temporary name; renamed", job.id)
            elif settled([job]):
                _release(job)  # never reached Slurm: submit it again
                session.add(job)
            session.commit()
        for (sweep_id, attempt), tasks in arrays.items():
            master = pick(found, sweep_comment(sweep_id, attempt), tasks, unix_user_of)
            if master is not None or settled(tasks):
                _adopt_array(session, sweep_id, attempt, tasks, master)
        for batch_id, jobs in batches.items():
            master = pick(found, batch_comment(batch_id), jobs, unix_user_of)
            if master is not None or settled(jobs):
                _adopt_batch(session, batch_id, jobs, master)
        unknown = [c for c in found if (i := job_id_from_comment(c)) and session.get(Job, i) is None]
        if unknown:  # another gateway's jobs, or a database that was replaced: worth one line, not thousands
            log.warning(
                "%d Slurm jobs carry hpcgw comments this database does not know (e.g. %s)", len(unknown), unknown[0]
            )
        return not waiting


def _release(job: Job) -> None:
    job.dispatching = False
    unbatch(job)


def _adopt_batch(session: Session, batch_id: str, jobs: list[Job], master: str | None) -> None:
    """A coalesced array: element k is the job with batch_index k."""
    for job in jobs:
        if master is not None:
            link(session, job, element_id(master, job.batch_index or 0))
        else:
            _release(job)
            session.add(job)
    if master is not None:
        log.warning(
            "adopting Slurm array %s for batch %s (%d jobs, submitted before a crash)", master, batch_id, len(jobs)
        )
        if renamed := finish_interrupted_array(Path(jobs[0].submit_folder), master):
            log.warning("batch %s: %d pickles were left under their temporary names; renamed", batch_id, renamed)
    session.commit()


def _adopt_array(session: Session, sweep_id: str, attempt: int, tasks: list[Job], master: str | None) -> None:
    for position, job in enumerate(sorted(tasks, key=lambda j: j.task_index or 0)):
        if master is not None:  # one array per attempt below MaxArraySize: element k is task k
            link(session, job, element_id(master, position))
        else:
            job.dispatching = False
            session.add(job)
    if master is not None:
        log.warning("adopting Slurm array %s for sweep %s attempt %d", master, sweep_id, attempt)
        if tasks and (renamed := finish_interrupted_array(Path(tasks[0].submit_folder), master)):
            log.warning("sweep %s: %d task pickles were left under their temporary names; renamed", sweep_id, renamed)
        sweep = session.get(Sweep, sweep_id)
        if sweep is not None and master not in sweep.array_ids:
            sweep.array_ids = [*sweep.array_ids, master]
            session.add(sweep)
    session.commit()
