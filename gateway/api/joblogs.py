"""A job's per-rank logs as the gateway shows them (the API's /logs and the dashboard's job page): submitit's
``<slurm id>_<rank>_log.out`` in the job's submit folder, read from the end.

The log is the job's user's file: they can replace it with a link to the gateway's configuration, a FIFO or
``/dev/zero``. So it is read through launchers.files: no link from the job root down, a regular file only, at
most a few hundred bytes a line really read, never blocking."""

from __future__ import annotations

from pathlib import Path

from gateway.store.models import Job
from launchers.files import tail_job_bytes

LINE_BYTES = 256  # what a line costs on average, to size the tail read


def rank_log(job: Job, rank: int) -> Path:
    """Rank ``rank``'s stdout (there is none before the job has a Slurm id)."""
    return Path(job.submit_folder) / f"{job.slurm_job_id}_{rank}_log.out"


def tail(path: Path, lines: int, root: Path | None = None) -> list[str]:
    """The last ``lines`` lines, reading only the end of the file (a trainer's log can be gigabytes); nothing
    when the file is missing or refused. ``root``: the folder trusted not to be a link (the job root; ``/``
    when None, so that no component of the path may be a link)."""
    try:
        data = tail_job_bytes(path, LINE_BYTES * lines + 4096, root=root)
    except OSError:
        return []
    return data.decode(errors="replace").splitlines()[-lines:]
