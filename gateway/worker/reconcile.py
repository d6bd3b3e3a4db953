"""At start-up: adopt the Slurm jobs that carry our id in their comment but were never linked to their row
(the gateway died between sbatch and the database update), and release the rows that never reached Slurm."""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from gateway.jobs import job_id_from_comment, slurm_comment, sweep_comment
from gateway.models import Job, Sweep
from gateway.worker.dispatch import link
from launchers.slurm.commands import find_by_comment
from launchers.slurm.ids import element_id
from launchers.slurm.shell import CommandError
from launchers.submission import finish_interrupted_array, finish_interrupted_submission

log = logging.getLogger(__name__)


def reconcile(engine: Engine) -> bool:
    """Returns False when Slurm could not be asked: the rows stay marked, and the caller asks again later."""
    with Session(engine, expire_on_commit=False) as session:
        orphans = session.exec(select(Job).where(col(Job.dispatching).is_(True), col(Job.slurm_job_id).is_(None))).all()
        if not orphans:
            return True
        try:
            found = find_by_comment("hpcgw:")
        except CommandError as exc:
            log.warning("reconciliation could not ask Slurm (%s); will retry", str(exc).splitlines()[0])
            return False
        arrays: dict[tuple[str, int], list[Job]] = {}
        for job in orphans:
            if job.sweep_id is not None:
                arrays.setdefault((job.sweep_id, job.attempt), []).append(job)
                continue
            slurm_id = found.get(slurm_comment(job.id))
            if slurm_id is not None:
                log.warning("adopting Slurm job %s for job %s (submitted before a crash)", slurm_id, job.id)
                link(session, job, slurm_id)
                if finish_interrupted_submission(Path(job.submit_folder), slurm_id):
                    log.warning("job %s: its pickle was left under its temporary name; renamed", job.id)
            else:
                job.dispatching = False  # never reached Slurm: submit it again
                session.add(job)
            session.commit()
        for (sweep_id, attempt), tasks in arrays.items():
            _adopt_array(session, sweep_id, attempt, tasks, found.get(sweep_comment(sweep_id, attempt)))
        unknown = [c for c in found if (i := job_id_from_comment(c)) and session.get(Job, i) is None]
        if unknown:  # another gateway's jobs, or a database that was replaced: worth one line, not thousands
            log.warning(
                "%d Slurm jobs carry hpcgw comments this database does not know (e.g. %s)", len(unknown), unknown[0]
            )
        return True


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
