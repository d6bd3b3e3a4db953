"""What the tracker reads from Slurm in one cycle: one sacct call for every active job, at most one squeue.

When accounting does not answer, one ``scontrol show job`` call (every job slurmctld still holds) stands in for
sacct. Nothing here ever concludes that a job failed because a command failed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from launchers.sacct import SacctRow, expand_array_id, master_id, parse_sacct, sacct_argv
from launchers.shell import CommandError, run
from launchers.slurm import slurm_env

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
class PendingInfo:
    reason: str | None
    partition: str
    position: int  # 1-based, among pending jobs of the same partition, in priority order


@dataclass
class Observations:
    jobs: dict[str, JobObservation] = field(default_factory=dict)
    pending: dict[str, PendingInfo] = field(default_factory=dict)
    commands: int = 0
    accounting_ok: bool = True
    source: str = "sacct"
    error: str | None = None


def aware(value: datetime | None) -> datetime | None:
    """sacct and scontrol print local time without an offset."""
    return None if value is None else value.astimezone(UTC)


def observe(job_ids: Sequence[str], *, want_pending: bool, chunk: int = 500) -> Observations:
    obs = Observations()
    env = slurm_env()
    # An array's id covers all its elements: a 1,000-task sweep is one id on sacct's command line.
    query = sorted({master_id(j) for j in job_ids}, key=lambda j: (len(j), j))
    if query:
        try:
            for start in range(0, len(query), chunk):
                obs.commands += 1
                out = run(sacct_argv(query[start : start + chunk]), env=env, timeout_s=60).stdout
                for row in parse_sacct(out):
                    for job_id in expand_array_id(row.job_id):
                        obs.jobs[job_id] = from_sacct(row)
        except CommandError as exc:
            obs.accounting_ok, obs.error = False, str(exc).splitlines()[0]
            log.warning("sacct failed (%s); falling back to scontrol", obs.error)
            obs.jobs = {}
            obs.source = "scontrol"
            try:
                obs.commands += 1
                obs.jobs = parse_scontrol_jobs(run(["scontrol", "-o", "show", "job"], env=env, timeout_s=60).stdout)
            except CommandError as exc2:
                obs.error = f"{obs.error}; scontrol failed too: {str(exc2).splitlines()[0]}"
                obs.source = "none"
    if want_pending:
        try:
            obs.commands += 1
            out = run(["squeue", "-h", "-t", "PENDING", "--sort=-p,i", "-o", "%i|%r|%P"], env=env, timeout_s=60).stdout
            obs.pending = parse_squeue_pending(out)
        except CommandError as exc:
            log.warning("squeue failed: %s", str(exc).splitlines()[0])
    return obs


def from_sacct(row: SacctRow) -> JobObservation:
    return JobObservation(
        slurm_state=row.slurm_state.split(" ", 1)[0],
        exit_code=row.exit_code,
        reason=None if row.reason in ("", "None") else row.reason,
        submit=aware(row.submit),
        start=aware(row.start),
        end=aware(row.end),
        settled=row.settled if row.state.is_terminal else True,
    )


def parse_squeue_pending(text: str) -> dict[str, PendingInfo]:
    result: dict[str, PendingInfo] = {}
    per_partition: dict[str, int] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        job_id, reason, partition = line.split("|", 2)
        per_partition[partition] = per_partition.get(partition, 0) + 1
        result[job_id] = PendingInfo(
            reason=None if reason in ("", "None") else reason, partition=partition, position=per_partition[partition]
        )
    return result


def parse_scontrol_jobs(text: str) -> dict[str, JobObservation]:
    """``scontrol -o show job``: one line per job, ``Key=Value`` fields separated by spaces."""
    jobs: dict[str, JobObservation] = {}
    for line in text.splitlines():
        fields: dict[str, str] = {}
        for item in line.split():
            key, sep, value = item.partition("=")
            if sep and key not in fields:
                fields[key] = value
        if "JobId" not in fields:
            continue
        code = fields.get("ExitCode", "0:0").split(":", 1)[0]
        job_id = fields["JobId"]
        if fields.get("ArrayJobId") and fields.get("ArrayTaskId"):
            ids = expand_array_id(f"{fields['ArrayJobId']}_[{fields['ArrayTaskId']}]")
        else:
            ids = [job_id]
        observation = JobObservation(
            slurm_state=fields.get("JobState", "UNKNOWN"),
            exit_code=int(code) if code.isdigit() else None,
            reason=None if fields.get("Reason") in (None, "None") else fields["Reason"],
            submit=aware(_time(fields.get("SubmitTime"))),
            start=aware(_time(fields.get("StartTime"))),
            end=aware(_time(fields.get("EndTime"))),
        )
        for one in ids:
            jobs[one] = observation
    return jobs


def _time(value: str | None) -> datetime | None:
    if not value or value in ("Unknown", "None", "(null)"):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def find_by_comment(prefix: str) -> dict[str, str]:
    """Slurm jobs whose comment starts with ``prefix``: {comment: job id, an array's own id for arrays}.
    For reconciliation at start-up only."""
    env = slurm_env()
    found: dict[str, str] = {}
    # -t all: a job that already finished is still in slurmctld for MinJobAge, and may not be in sacct yet.
    out = run(["squeue", "-h", "-t", "all", "-o", "%i|%k"], env=env, timeout_s=60, check=False)
    for line in out.stdout.splitlines():
        job_id, _, comment = line.partition("|")
        if comment.startswith(prefix):
            found[comment] = job_id if "_" not in job_id else master_id(job_id)
    acct = run(
        ["sacct", "-X", "-n", "-P", "-S", "now-7days", "-o", "JobIDRaw,Comment"], env=env, timeout_s=60, check=False
    )
    for line in acct.stdout.splitlines():
        job_id, _, comment = line.partition("|")
        if comment.startswith(prefix):
            found.setdefault(comment, master_id(job_id) if "_" in job_id else job_id)
    return found


def partition_sizes() -> dict[str, tuple[int, int]]:
    """{partition: (nodes, CPUs of its largest node)} from one sinfo call."""
    out = run(["sinfo", "-h", "-N", "-o", "%P|%N|%c"], env=slurm_env(), timeout_s=30).stdout
    nodes: dict[str, set[str]] = {}
    cpus: dict[str, int] = {}
    for line in out.splitlines():
        partition, node, count = line.split("|")
        partition = partition.rstrip("*")
        nodes.setdefault(partition, set()).add(node)
        cpus[partition] = max(cpus.get(partition, 0), int(count.rstrip("+")))
    return {p: (len(nodes[p]), cpus[p]) for p in nodes}
