"""A job's per-rank logs as the gateway shows them (the API's /logs and the dashboard's job page): submitit's
``<slurm id>_<rank>_log.out`` in the job's submit folder, read from the end."""

from __future__ import annotations

from pathlib import Path

from gateway.models import Job


def rank_log(job: Job, rank: int) -> Path:
    """Rank ``rank``'s stdout (there is none before the job has a Slurm id)."""
    return Path(job.submit_folder) / f"{job.slurm_job_id}_{rank}_log.out"


def tail(path: Path, lines: int) -> list[str]:
    """The last ``lines`` lines, reading only the end of the file (a trainer's log can be gigabytes)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - 256 * lines - 4096))
            return fh.read().decode(errors="replace").splitlines()[-lines:]
    except OSError:
        return []
