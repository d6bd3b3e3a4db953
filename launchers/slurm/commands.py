"""Slurm's commands as calls: each builds its argv, runs it through :func:`launchers.slurm.shell.run` and hands
the output to that command's one parser. Which cluster is meant comes from the environment (``SLURM_CONF``),
as for every Slurm command a user types."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from launchers.slurm import scontrol, squeue
from launchers.slurm.ids import master_id, wanted_ids
from launchers.slurm.sacct import (
    SacctRow,
    comments_argv,
    new_delimiter,
    parse_comment_rows,
    parse_sacct,
    sacct_argv,
)
from launchers.slurm.shell import CommandError, run
from launchers.slurm.sinfo import PartitionSize, SinfoRow, parse_sinfo, partition_sizes, sinfo_argv
from launchers.slurm.times import parse_timestamp

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
        delimiter = new_delimiter()
        argv = sacct_argv(ids[start : start + chunk], all_steps=all_steps, attempts=attempts, delimiter=delimiter)
        out = run(argv, timeout_s=TIMEOUT_S).stdout
        rows += parse_sacct(out, delimiter=delimiter)
    return rows


def pending() -> dict[str, squeue.PendingInfo]:
    delimiter = new_delimiter()
    return squeue.parse_pending(run(squeue.pending_argv(delimiter), timeout_s=TIMEOUT_S).stdout, delimiter)


def queued_ids() -> list[str]:
    """Every job slurmctld holds that has not ended yet, one id per array."""
    return run(squeue.IDS_ARGV, timeout_s=TIMEOUT_S).stdout.split()


def held_jobs() -> list[squeue.HeldJob]:
    """Every job slurmctld still holds (for ``MinJobAge`` after it ended), one record each, every user's: the
    caller keeps only its own (by user, account, comment and submit time)."""
    out = run(squeue.JSON_ARGV, timeout_s=TIMEOUT_S).stdout
    try:
        return squeue.parse_jobs_json(out)
    except ValueError as exc:
        raise CommandError(tuple(squeue.JSON_ARGV), 0, out[:200], f"unreadable output: {exc}") from exc


def controller_state(job_id: str, user: str | None = None) -> str | None:
    """The state slurmctld holds the job in, or None once it has forgotten the job (MinJobAge after its end).
    ``user``: only a record of that user's counts (an id Slurm gave again is someone else's job)."""
    for held in held_jobs():
        try:
            if wanted_ids(held.job_id, {job_id}) or master_id(held.job_id) == job_id:
                if user is None or held.user == user:
                    return held.state
        except ValueError:
            continue
    return None


@dataclass(frozen=True)
class Found:
    """A Slurm job found by its comment, with what tells whose it is."""

    job_id: str  # an array's own id for arrays
    user: str
    account: str
    submit: datetime | None


def find_by_comment(prefix: str) -> dict[str, list[Found]]:
    """Slurm jobs whose comment starts with ``prefix``: {comment: every job that carries it}. Comments are
    public: anyone can give their job ours, so the caller picks by user, account and submit time.
    slurmctld first (a job that just ended may not be in accounting yet), then the last week of accounting.
    Both must answer (a failed command raises): "not found" has to mean that Slurm does not have the job."""
    found: dict[str, list[Found]] = {}

    def add(comment: str, one: Found) -> None:
        if comment.startswith(prefix) and one not in found.setdefault(comment, []):
            found[comment].append(one)

    for held in held_jobs():
        add(held.comment, Found(master_id(held.job_id), held.user, held.account, held.submit))
    delimiter = new_delimiter()
    for row in parse_comment_rows(run(comments_argv(delimiter=delimiter), timeout_s=TIMEOUT_S).stdout, delimiter):
        add(row["Comment"], Found(master_id(row["JobID"]), row["User"], row["Account"], parse_timestamp(row["Submit"])))
    return found


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
