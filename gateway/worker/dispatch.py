"""Releasing accepted jobs to Slurm: oldest first per team while the team is under its quota, sweeps as job
arrays. A job is marked ``dispatching`` (and committed) before sbatch runs, so that after a crash
reconciliation looks in Slurm before submitting it again.

Coalescing: the jobs a cycle releases that share a shape (everything the sbatch script holds: user, partition,
account, QoS, resources, time limit, container) go out as one job array, one element per job with its own
command and environment. One sbatch then carries fifty jobs, which is what lets the gateway outrun a client
that calls Slurm once per job. The fair order and the quotas are decided before the grouping, job by job."""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, func, update
from sqlalchemy import select as sa_select
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session, col, select

from gateway.config import GatewayConfig
from gateway.site.folders import FolderError, JobFolders
from gateway.store import rows
from gateway.store.models import Job, Sweep, new_id, utcnow
from gateway.submit.comments import batch_comment, sweep_comment
from gateway.submit.images import DispatchImages, ImageChangedError
from gateway.submit.job_requests import active_counts, record_state
from gateway.submit.specs import job_spec
from gateway.worker.linking import each_row, link, link_all, link_batch
from gateway.worker.shapes import Element, Shapes, element
from gateway.worker.stats import WorkerStats
from launchers.errors import SpecError, SubmitError
from launchers.slurm.commands import is_unreachable
from launchers.slurm.ids import master_id
from launchers.slurm.shell import CommandError
from launchers.spec import JobSpec
from launchers.states import JobState
from launchers.submission import submit
from launchers.sweeps import chunks, submit_array

log = logging.getLogger(__name__)
SUBMIT_ERRORS = (SubmitError, SpecError, CommandError, FolderError, ValueError, OSError)
# sbatch's refusal when the team's account holds all the jobs Slurm lets it submit (GrpSubmitJobs): the jobs
# wait in the gateway, with that reason, until the account has room again.
SUBMIT_LIMIT = "job submit limit"


class Outcome(Enum):
    NOTHING = "nothing"  # nothing was waiting
    QUEUED = "queued"  # Slurm took it
    REFUSED = "refused"  # Slurm refused it: the jobs failed, with sbatch's reason
    UNREACHABLE = "unreachable"  # Slurm did not answer: the jobs stay accepted for the next cycle


def prepare_folders(folders: JobFolders, job: Job) -> None:
    """The trainer protocol promises existing directories for MODEL_OUTPUT_DIR and the METRICS_FILE; they sit
    in the team's folder, and only the gateway and the job's user may write in them (gateway.site.folders). A folder
    someone else made first is refused: that job fails, with the folder in its reason."""
    folders.job(job.team, job.user, job.folder, job.submit_folder)


@contextmanager
def collection_paused() -> Iterator[None]:
    """No cyclic garbage collection while a dispatch runs: the thousands of rows, specs and tasks it makes
    trigger collections that go over every object, a tenth of the dispatch's time; it runs once after."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class Dispatcher:
    def __init__(self, config: GatewayConfig, stats: WorkerStats, stopping: Callable[[], bool] = lambda: False) -> None:
        self.config = config
        self.stats = stats
        self.stopping = stopping  # checked before every sbatch: a shutdown waits for one submission at most
        self.max_array_size: int | None = None
        # per account: the largest array its GrpSubmitJobs took lately (halved at each refusal of an array)
        self.batch_cap: dict[str, int] = {}
        self.images = DispatchImages(config)  # renewed each cycle: an image may change between two

    def run(self, session: Session) -> Outcome:
        """Sweeps first (each is one array), then single jobs within each team's quota."""
        self.images = DispatchImages(self.config)
        outcome = self._sweeps(session)
        if outcome is Outcome.UNREACHABLE:
            return outcome
        shapes = Shapes(self.config)
        for team_name, team in self.config.teams.items():
            waiting = session.exec(
                select(Job)
                .where(
                    Job.team == team_name,
                    Job.state == JobState.ACCEPTED,
                    col(Job.sweep_id).is_(None),
                    col(Job.dispatching).is_(False),  # left by a crash: reconciliation looks in Slurm first
                )
                .order_by(col(Job.submit_time), col(Job.id))
            ).all()
            if not waiting:
                continue
            running, gpus = active_counts(session, team_name)
            admitted: list[Job] = []
            for job in waiting:  # in order: a later, smaller job does not overtake
                if running >= team.max_running_jobs or gpus + job.gpus > team.max_gpus:
                    break
                admitted.append(job)
                running, gpus = running + 1, gpus + job.gpus
            groups: dict[str, tuple[JobSpec, list[tuple[Job, Element]]]] = {}
            for job in admitted:
                refusal = self.images.refusal(job.image, job.image_digest)
                if refusal is not None:
                    outcome = self.failed(session, [job], refusal)
                    continue
                try:
                    own = element(self.config, job)
                    key, spec = shapes.of(job)
                except ValueError as exc:  # a row no spec can be made of: it fails alone
                    outcome = self.failed(session, [job], exc)
                    continue
                groups.setdefault(key, (spec, []))[1].append((job, own))
            for spec, group in groups.values():
                account = group[0][0].account
                size = min(self.max_array_size or len(group), self.batch_cap.get(account, len(group)))
                for part in chunks(len(group), size):
                    if self.stopping():
                        return outcome
                    jobs = [job for job, _ in group[part.start : part.stop]]
                    elements = [own for _, own in group[part.start : part.stop]]
                    if len(jobs) == 1:
                        one = self._single(session, jobs[0])
                    else:
                        one = self._batch(session, jobs, spec, elements)
                    if one is Outcome.UNREACHABLE:
                        return one
                    outcome = one if outcome is Outcome.NOTHING else outcome
        return outcome

    def _sweeps(self, session: Session) -> Outcome:
        """Each (sweep, attempt) still waiting goes out as one job array: one sbatch per MaxArraySize tasks."""
        waiting = session.exec(
            select(Job)
            .where(Job.state == JobState.ACCEPTED, col(Job.sweep_id).is_not(None), col(Job.dispatching).is_(False))
            .order_by(col(Job.sweep_id), col(Job.attempt), col(Job.task_index))
        ).all()
        groups: dict[tuple[str, int], list[Job]] = {}
        for job in waiting:
            groups.setdefault((job.sweep_id or "", job.attempt), []).append(job)
        outcome = Outcome.NOTHING
        for (sweep_id, attempt), tasks in groups.items():
            if self.stopping():
                break
            outcome = self._array(session, sweep_id, attempt, tasks)
            if outcome is Outcome.UNREACHABLE:
                break
        return outcome

    def _array(self, session: Session, sweep_id: str, attempt: int, tasks: list[Job]) -> Outcome:
        sweep = session.get(Sweep, sweep_id)
        if sweep is None:
            return Outcome.REFUSED
        refusal = self.images.refusal(tasks[0].image, tasks[0].image_digest)  # a sweep's tasks share one version
        if refusal is not None:
            return self.failed(session, tasks, refusal)
        if not _mark_dispatching(session, tasks):
            return Outcome.REFUSED
        try:
            with JobFolders(self.config) as folders:
                for job in tasks:
                    prepare_folders(folders, job)
            specs = [job_spec(self.config, job) for job in tasks]
            base = specs[0].model_copy(update={"comment": sweep_comment(sweep_id, attempt)})
            handles = submit_array(
                base,
                [s.env for s in specs],
                sweep.max_parallel,
                check=False,
                array_size=self.max_array_size,
                checked=True,
            )
        except SUBMIT_ERRORS as exc:
            return self.failed(session, tasks, exc)
        masters = list(dict.fromkeys(master_id(h.job_id) for h in handles))
        sweep.array_ids = [*sweep.array_ids, *masters]
        session.add(sweep)
        link_all(session, tasks, [h.job_id for h in handles])
        session.commit()
        self._reached(len(tasks))
        log.info(
            "sweep %s attempt %d submitted as array(s) %s (%d tasks, at most %d at once)",
            sweep_id,
            attempt,
            ",".join(masters),
            len(tasks),
            sweep.max_parallel,
        )
        return Outcome.QUEUED

    def _batch(self, session: Session, jobs: list[Job], spec: JobSpec, elements: list[Element]) -> Outcome:
        """Same-shape jobs as one array. The batch, each job's element and the shared submitit folder are
        committed with ``dispatching`` before sbatch, so that reconciliation can adopt the array after a crash.
        ``spec``: one of the jobs' (the shape's), ``elements``: each job's own part."""
        batch_id = new_id()
        first = jobs[0]
        folder = Path(self.config.job_root) / first.team / "batches" / batch_id
        jobs, elements = self._with_folders(session, jobs, elements, str(folder))
        if not jobs:
            return Outcome.REFUSED
        if not _mark_dispatching(session, jobs, batch_id, str(folder)):
            return Outcome.REFUSED
        try:
            base = spec.model_copy(
                update={
                    "comment": batch_comment(batch_id),
                    "name": f"hpcgw-batch-{batch_id}",
                    "folder": folder.absolute(),
                }
            )
            handles = submit_array(
                base,
                [own.env for own in elements],
                len(jobs),
                check=False,
                array_size=len(jobs),
                commands=[own.command for own in elements],
                chain=False,
                checked=True,
            )
        except SUBMIT_ERRORS as exc:
            return self.failed(session, jobs, exc)
        if [h.job_id for h in handles] == [f"{master_id(handles[0].job_id)}_{i}" for i in range(len(jobs))]:
            link_batch(session, batch_id, master_id(handles[0].job_id))
        else:  # not one array of elements 0..n-1: each its own id
            link_all(session, jobs, [h.job_id for h in handles])
        session.commit()
        self._reached(len(jobs))
        log.info(
            "%d jobs of team %s (user %s) submitted as array %s",
            len(jobs),
            first.team,
            first.user,
            master_id(handles[0].job_id),
        )
        return Outcome.QUEUED

    def _with_folders(
        self, session: Session, jobs: list[Job], elements: list[Element], submit_folder: str
    ) -> tuple[list[Job], list[Element]]:
        """The batch's jobs whose folders (and the batch's submitit folder) could be made; the others fail alone."""
        kept: list[tuple[Job, Element]] = []
        with JobFolders(self.config) as folders:
            for job, own in zip(jobs, elements, strict=True):
                try:
                    folders.job(job.team, job.user, job.folder, submit_folder)
                except (FolderError, OSError) as exc:
                    self.failed(session, [job], exc)
                    continue
                kept.append((job, own))
        return [job for job, _ in kept], [own for _, own in kept]

    def _single(self, session: Session, job: Job) -> Outcome:
        if not _mark_dispatching(session, [job]):
            return Outcome.REFUSED
        try:
            with JobFolders(self.config) as folders:
                prepare_folders(folders, job)
            handle = submit(job_spec(self.config, job), backend="slurm", check=False)
        except SUBMIT_ERRORS as exc:
            return self.failed(session, [job], exc)
        link(session, job, handle.job_id)
        session.commit()
        self._reached(1)
        log.info("job %s (team %s) submitted as Slurm job %s", job.id, job.team, handle.job_id)
        return Outcome.QUEUED

    def _reached(self, count: int) -> None:
        self.stats.slurm_reachable = True
        self.stats.dispatched += count

    def failed(self, session: Session, jobs: list[Job], exc: BaseException) -> Outcome:
        """Slurm unreachable: the jobs stay accepted for the next cycle. Slurm refused them: they failed."""
        text = str(exc)
        # sbatch through submitit arrives wrapped (SubmitError from CommandError): a time-out or a missing
        # command is told by the command's own error, not by the wrapper's text.
        unreachable = is_unreachable(exc) or (exc.__cause__ is not None and is_unreachable(exc.__cause__))
        for job in jobs:
            unbatch(job)
        if SUBMIT_LIMIT in text:
            if len(jobs) > 1:  # an array counts each element against GrpSubmitJobs: send fewer at once
                self.batch_cap[jobs[0].account] = max(1, len(jobs) // 2)
            return self._held(session, jobs)
        for job in jobs:
            job.dispatching = False
            job.dispatch_error = text[-2000:]
            if not unreachable:
                last = text.strip().splitlines()[-1] if text.strip() else type(exc).__name__
                refused = "" if isinstance(exc, (FolderError, ImageChangedError)) else "sbatch refused the job: "
                job.reason = f"{refused}{last}"[:256]  # the job's own reason, not only its history's
                record_state(session, job, JobState.FAILED, reason=job.reason)
                job.end_time = utcnow()
            session.add(job)
        session.commit()
        if unreachable:
            self.stats.slurm_reachable = False
            self.stats.last_error = text.splitlines()[0] if text else type(exc).__name__
            log.warning("Slurm unreachable; %d job(s) stay accepted: %s", len(jobs), self.stats.last_error)
            return Outcome.UNREACHABLE
        log.error("sbatch refused %d job(s): %s", len(jobs), text)
        return Outcome.REFUSED

    def _held(self, session: Session, jobs: list[Job]) -> Outcome:
        for job in jobs:
            job.dispatching = False
            job.reason = f"waiting: Slurm's submit limit of account {job.account} is reached (GrpSubmitJobs)"
            session.add(job)
        session.commit()
        log.info("%d job(s) wait: Slurm's submit limit of account %s is reached", len(jobs), jobs[0].account)
        return Outcome.REFUSED


def unbatch(job: Job) -> None:
    """Back to a job of its own: the batch never reached Slurm, and the next cycle groups it afresh."""
    if job.batch_id is not None:
        job.batch_id = job.batch_index = None
        job.submit_folder = str(Path(job.folder) / "job")


def _mark_dispatching(session: Session, jobs: list[Job], batch_id: str | None = None, folder: str = "") -> bool:
    """Commit ``dispatching`` (and a batch's id, element index and shared folder) before sbatch runs: in one
    statement, and into the loaded objects as their stored values, without an ORM flush of one update per job.

    Only a row still accepted and not dispatching is taken, in the statement itself: a cancellation the API
    committed after this cycle read the rows (gateway.submit.job_requests.request_cancel, a conditional update
    too) wins, and the cancelled job never reaches sbatch. If any of ``jobs`` was taken so, none is marked and False is
    returned: the next cycle reads the others again."""
    marked = {"dispatching": True, "dispatch_time": utcnow()}
    per_job: list[dict[str, Any]] = [{"job": job.id, **marked} for job in jobs]
    if batch_id is not None:
        for index, values in enumerate(per_job):
            values |= {"batch_id": batch_id, "batch_index": index, "submit_folder": folder}
    table = rows.JOB.c
    still_waiting = (table.state == JobState.ACCEPTED) & table.dispatching.is_(False)
    each_row(session, update(rows.JOB).where((table.id == bindparam("job")) & still_waiting), per_job)
    ids = [job.id for job in jobs]
    taken = session.execute(sa_select(func.count()).where(table.id.in_(ids), table.dispatching.is_(True))).scalar_one()
    if taken != len(jobs):
        # They were read not dispatching, and only the active worker marks rows: every marked one is this call's,
        # and goes back to what this cycle read of it.
        restore = [
            {"job": j.id, "dispatching": False, "dispatch_time": j.dispatch_time, "batch_id": j.batch_id}
            | {"batch_index": j.batch_index, "submit_folder": j.submit_folder}
            for j in jobs
        ]
        each_row(session, update(rows.JOB).where((table.id == bindparam("job")) & table.dispatching.is_(True)), restore)
        session.commit()
        log.info(
            "%d of %d jobs were cancelled while this cycle sent them: the others go next cycle",
            len(jobs) - taken,
            len(jobs),
        )
        return False
    session.commit()
    for job, values in zip(jobs, per_job, strict=True):
        for name, value in values.items():
            if name != "job":
                set_committed_value(job, name, value)
    return True
