"""What the worker reads from Slurm in one cycle: one sacct call for every active job (chunked), at most one
squeue for pending reasons and queue positions.

When accounting does not answer, one ``scontrol show job`` call (every job slurmctld still holds) stands in for
sacct. Nothing here ever concludes that a job failed because a command failed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from launchers.slurm import commands
from launchers.slurm.ids import expand_array_id, master_id
from launchers.slurm.sacct import SacctRow
from launchers.slurm.scontrol import job_ids
from launchers.slurm.shell import CommandError
from launchers.slurm.squeue import PendingInfo
from launchers.slurm.times import parse_timestamp
from launchers.states import slurm_base_state

log = logging.getLogger(__name__)


@dataclass
class JobObservation:
    """Slurm's word on one job in this cycle."""

    slurm_state: str
    exit_code: int | None = None
    reason: str | None = None
    submit: datetime | None = None
    start: datetime | None = None
    end: datetime | None = None
    settled: bool = True  # False: terminal in Slurm, but accounting has not filled the record in yet


@dataclass
class Observations:
    jobs: dict[str, JobObservation] = field(default_factory=dict)
    pending: dict[str, PendingInfo] = field(default_factory=dict)
    commands: int = 0
    accounting_ok: bool = True
    source: str = "sacct"
    error: str | None = None


def observe(job_ids_: Sequence[str], *, want_pending: bool, chunk: int = 500) -> Observations:
    obs = Observations()
    # An array's id covers all its elements: a 1,000-task sweep is one id on sacct's command line.
    query = sorted({master_id(j) for j in job_ids_}, key=lambda j: (len(j), j))
    if query:
        try:
            obs.commands += -(-len(query) // chunk)
            for row in commands.sacct(query, chunk=chunk):
                for job_id in expand_array_id(row.job_id):
                    obs.jobs[job_id] = from_sacct(row)
        except CommandError as exc:
            obs.accounting_ok, obs.error = False, _first_line(exc)
            log.warning("sacct failed (%s); falling back to scontrol", obs.error)
            obs.jobs, obs.source = {}, "scontrol"
            try:
                obs.commands += 1
                for record in commands.scontrol_jobs():
                    observation = from_scontrol(record)
                    for one in job_ids(record):
                        obs.jobs[one] = observation
            except CommandError as exc2:
                obs.error = f"{obs.error}; scontrol failed too: {_first_line(exc2)}"
                obs.source = "none"
    if want_pending:
        try:
            obs.commands += 1
            obs.pending = commands.pending()
        except CommandError as exc:
            log.warning("squeue failed: %s", _first_line(exc))
    return obs


def from_sacct(row: SacctRow) -> JobObservation:
    return JobObservation(
        slurm_state=slurm_base_state(row.slurm_state),
        exit_code=row.exit_code,
        reason=None if row.reason in ("", "None") else row.reason,
        submit=row.submit,
        start=row.start,
        end=row.end,
        settled=row.settled if row.state.is_terminal else True,
    )


def from_scontrol(record: dict[str, str]) -> JobObservation:
    code = record.get("ExitCode", "0:0").split(":", 1)[0]
    return JobObservation(
        slurm_state=slurm_base_state(record.get("JobState", "UNKNOWN")),
        exit_code=int(code) if code.isdigit() else None,
        reason=None if record.get("Reason") in (None, "None") else record["Reason"],
        submit=parse_timestamp(record.get("SubmitTime")),
        start=parse_timestamp(record.get("StartTime")),
        end=parse_timestamp(record.get("EndTime")),
    )


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0]
