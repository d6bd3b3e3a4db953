"""Slurm's commands as calls: each builds its argv, runs it through :func:`launchers.slurm.shell.run` and hands
the output to that command's one parser. Which cluster is meant comes from the environment (``SLURM_CONF``),
as for every Slurm command a user types."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from launchers.slurm import scontrol, squeue
from launchers.slurm.sacct import SacctRow, comments_argv, parse_sacct, sacct_argv
from launchers.slurm.shell import CommandError, run
from launchers.slurm.sinfo import PartitionSize, SinfoRow, parse_sinfo, partition_sizes, sinfo_argv

TIMEOUT_S = 60.0


class SlurmError(RuntimeError):
    """Slurm answered, but not with what we asked for."""


def sbatch(script: Path, args: Sequence[str] = ()) -> str:
    """Submit ``script``; returns the job id. sbatch reads ``#SBATCH`` lines from the file itself."""
    out = run(["sbatch", "--parsable", *args, str(script)], timeout_s=TIMEOUT_S).stdout.strip()
    job_id = out.split(";", 1)[0]
    if not job_id.isdigit():
        raise SlurmError(f"sbatch printed {out!r}, not a job id")
    return job_id


def scancel(job_ids: Iterable[str], *, as_user: str | None = None) -> None:
    ids = list(job_ids)
    if ids:
        run(["scancel", *ids], timeout_s=TIMEOUT_S, as_user=as_user)


def requeue_elsewhere(job_id: str, exclude: Sequence[str], *, as_user: str | None = None) -> None:
    """Run the job again, not on ``exclude``: requeue it held, widen its ExcNodeList, release it. (A running
    job's ExcNodeList cannot change; a pending one's can, and the hold keeps it from starting in between.)"""
    run(["scontrol", "requeuehold", job_id], timeout_s=TIMEOUT_S, as_user=as_user)
    try:
        if exclude:
            argv = ["scontrol", "update", f"JobId={job_id}", f"ExcNodeList={','.join(exclude)}"]
            run(argv, timeout_s=TIMEOUT_S, as_user=as_user)
    finally:
        run(["scontrol", "release", job_id], timeout_s=TIMEOUT_S, as_user=as_user)


def sacct(
    job_ids: Iterable[str], *, all_steps: bool = False, attempts: bool = False, chunk: int = 5000
) -> list[SacctRow]:
    """Accounting rows for ``job_ids``, in calls of at most ``chunk`` ids; ``attempts``: a row per run."""
    ids = list(job_ids)
    rows: list[SacctRow] = []
    for start in range(0, len(ids), chunk):
        argv = sacct_argv(ids[start : start + chunk], all_steps=all_steps, attempts=attempts)
        out = run(argv, timeout_s=TIMEOUT_S).stdout
        rows += parse_sacct(out)
    return rows


def pending() -> dict[str, squeue.PendingInfo]:
    return squeue.parse_pending(run(squeue.PENDING_ARGV, timeout_s=TIMEOUT_S).stdout)


def queued_ids() -> list[str]:
    """Every job slurmctld holds that has not ended yet, one id per array."""
    return run(squeue.IDS_ARGV, timeout_s=TIMEOUT_S).stdout.split()


def scontrol_jobs() -> list[dict[str, str]]:
    """Every job slurmctld still holds (for ``MinJobAge`` after it ended), one record each."""
    return scontrol.parse_records(run(scontrol.SHOW_JOBS_ARGV, timeout_s=TIMEOUT_S).stdout)


def controller_state(job_id: str) -> str | None:
    """The state slurmctld holds the job in, or None once it has forgotten the job (MinJobAge after its end)."""
    proc = run(["scontrol", "-o", "show", "job", job_id], timeout_s=TIMEOUT_S, check=False)
    if proc.returncode != 0:
        if "Invalid job id" in proc.stderr:
            return None
        raise CommandError(("scontrol", "-o", "show", "job", job_id), proc.returncode, proc.stdout, proc.stderr)
    records = scontrol.parse_records(proc.stdout)
    return records[0].get("JobState") if records else None


def find_by_comment(prefix: str) -> dict[str, str]:
    """Slurm jobs whose comment starts with ``prefix``: {comment: job id, an array's own id for arrays}.
    slurmctld first (a job that just ended may not be in accounting yet), then the last week of accounting.
    Both must answer (a failed command raises): "not found" has to mean that Slurm does not have the job."""
    found = squeue.parse_comments(run(squeue.COMMENTS_ARGV, timeout_s=TIMEOUT_S).stdout, prefix)
    acct = squeue.parse_comments(run(comments_argv(), timeout_s=TIMEOUT_S).stdout, prefix)
    return {**acct, **found}


def sinfo(partition: str | None = None) -> list[SinfoRow]:
    return parse_sinfo(run(sinfo_argv(partition), timeout_s=30).stdout)


def partitions() -> dict[str, PartitionSize]:
    return partition_sizes(sinfo())


def max_array_size() -> int:
    """The site's MaxArraySize (array indices must stay below it)."""
    return scontrol.max_array_size(run(scontrol.SHOW_CONFIG_ARGV, timeout_s=30).stdout)


def node_address(node: str) -> str | None:
    return scontrol.node_address(run(["scontrol", "-o", "show", "node", node], timeout_s=30).stdout)


def wait_until_done(job_id: str, *, timeout_s: float, poll_s: float = 1.0) -> SacctRow:
    """Poll sacct for one job until its record is final; for scripts and tests, not the gateway."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            rows = [r for r in sacct([job_id]) if r.job_id == job_id]
        except CommandError:
            rows = []
        if rows and rows[0].settled:
            return rows[0]
        if time.monotonic() > deadline:
            state = rows[0].slurm_state if rows else "not yet in accounting"
            raise TimeoutError(f"job {job_id} not finished after {timeout_s:.0f} s (last state: {state})")
        time.sleep(poll_s)


# Messages that mean "Slurm is not answering right now", as opposed to "Slurm refused this request".
_UNREACHABLE = (
    "Unable to contact slurm controller",
    "Socket timed out",
    "Connection refused",
    "Zero Bytes",
    "Transport endpoint",
    "try again",
    "not responding",
)


def is_unreachable(exc: BaseException) -> bool:
    """Whether a failed Slurm command is worth retrying later (controller down, time-out, command missing)
    rather than a refusal of the request itself."""
    from launchers.slurm.shell import CommandNotFoundError, CommandTimeoutError

    if isinstance(exc, CommandNotFoundError | CommandTimeoutError):
        return True
    return any(marker in str(exc) for marker in _UNREACHABLE)
