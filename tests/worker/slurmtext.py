"""What the fake Slurm prints: each command's output in the format the real one prints it (captured from the
local cluster: tests/data/sacct_3jobs_with_steps.txt and tests/data/requeue/), built from the fake's jobs."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from launchers.slurm import sacct, sinfo, squeue

# The states Slurm no longer runs: a job in one of them has an end time (once accounting has settled it).
ENDED = frozenset(
    {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL"}
)


@dataclass
class Run:
    """One run of a job (``sacct -D`` prints one row per run; requeues add runs)."""

    state: str = "PENDING"
    start: datetime | None = None
    end: datetime | None = None
    exit_code: int = 0
    signal: int = 0
    node_list: str = ""
    reason: str = "None"


@dataclass
class FakeJob:
    job_id: str  # "100", or "100_3" for an array element
    raw_id: str  # JobIDRaw: an array element gets its own number once it leaves the pending range
    name: str
    comment: str
    partition: str
    account: str
    nodes: int
    time_limit_min: int
    submit: datetime
    array_id: str | None = None
    array_index: int | None = None
    array_limit: int | None = None  # the %K of --array
    runs: list[Run] = field(default_factory=lambda: [Run()])
    settled: bool = True  # False: accounting shows the end state without an end time yet
    in_controller: bool = True  # False: slurmctld forgot it (MinJobAge after the end); accounting still has it
    in_accounting: bool = True  # False: slurmdbd has not heard of it yet
    priority: int = 0
    cancelled_by: int = 0
    excluded: str = ""  # ExcNodeList (scontrol update)
    user: str = "root"  # the Unix user sbatch ran as

    @property
    def run(self) -> Run:
        return self.runs[-1]

    @property
    def state(self) -> str:
        return self.run.state

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    @property
    def pending(self) -> bool:
        return self.state == "PENDING"


def timestamp(value: datetime | None, missing: str = "Unknown") -> str:
    """Slurm prints local time without an offset."""
    return missing if value is None else value.astimezone().strftime("%Y-%m-%dT%H:%M:%S")


def _elapsed(run: Run, now: datetime) -> str:
    if run.start is None:
        return "00:00:00"
    seconds = int(((run.end or now) - run.start).total_seconds())
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _state_text(job: FakeJob, run: Run) -> str:
    return f"CANCELLED by {job.cancelled_by}" if run.state == "CANCELLED" else run.state


def pending_range(master: str, elements: list[FakeJob]) -> str:
    """``100_[1-3%2]``: how sacct and squeue print the elements still pending as one record."""
    spans: list[list[int]] = []
    for index in sorted(e.array_index or 0 for e in elements):
        if spans and index == spans[-1][1] + 1:
            spans[-1][1] = index
        else:
            spans.append([index, index])
    parts = [str(low) if low == high else f"{low}-{high}" for low, high in spans]
    limit = elements[0].array_limit
    return f"{master}_[{','.join(parts)}{f'%{limit}' if limit else ''}]"


def grouped(jobs: Iterable[FakeJob]) -> list[tuple[str, FakeJob, list[FakeJob]]]:
    """(printed id, representative, members): an array's pending elements collapse into one range record."""
    out: list[tuple[str, FakeJob, list[FakeJob]]] = []
    pending_of: dict[str, list[FakeJob]] = {}
    for job in jobs:
        if job.array_id is not None and job.pending:
            if job.array_id not in pending_of:
                pending_of[job.array_id] = []
                out.append(("", job, pending_of[job.array_id]))
            pending_of[job.array_id].append(job)
        else:
            out.append((job.job_id, job, [job]))
    return [(pid or pending_range(rep.array_id or "", members), rep, members) for pid, rep, members in out]


def sacct_rows(jobs: Iterable[FakeJob], now: datetime, attempts: bool, delimiter: str = sacct.DELIMITER) -> str:
    lines = []
    for printed, job, _ in grouped(jobs):
        for run in job.runs if attempts else job.runs[-1:]:
            last = run is job.run
            end = run.end if not last or job.settled else None
            values = {
                "JobID": printed,
                "JobIDRaw": job.raw_id,
                "JobName": job.name,
                "State": _state_text(job, run),
                "ExitCode": f"{run.exit_code}:{run.signal}",
                "Partition": job.partition,
                "Account": job.account,
                "NNodes": str(job.nodes),
                "NodeList": run.node_list or "None assigned",
                "Submit": timestamp(job.submit),
                "Start": timestamp(run.start, "None" if run.state in ENDED else "Unknown"),
                "End": timestamp(end),
                "Elapsed": _elapsed(run, now),
                "Reason": run.reason,
                "User": job.user,
                "Comment": job.comment,
            }
            lines.append(delimiter.join(values[f] for f in sacct.FIELDS))
    return "".join(f"{line}\n" for line in lines)


def sacct_comments(jobs: Iterable[FakeJob], delimiter: str = sacct.DELIMITER) -> str:
    """``sacct -o JobID,User,Account,Submit,Comment``: an array element prints as ``A_i`` (its raw id is a
    number of its own)."""
    return "".join(
        delimiter.join((printed, job.user, job.account, timestamp(job.submit), job.comment)) + "\n"
        for printed, job, _ in grouped(jobs)
    )


def held_record(job: FakeJob, printed: str) -> dict[str, Any]:
    """One job of ``squeue --json`` (Slurm 22.05, openapi v0.0.38), with the fields the project reads."""
    run = job.run
    task: int | None = None
    tasks = ""
    if job.array_id is not None:
        if "_[" in printed:
            tasks = printed.partition("_[")[2].rstrip("]")
        else:
            task = job.array_index
    end = run.end if job.ended else None
    return {
        "job_id": int(job.raw_id),
        "array_job_id": int(job.array_id or 0),
        "array_task_id": task,
        "array_task_string": tasks,
        "name": job.name,
        "user_name": job.user,
        "account": job.account,
        "comment": job.comment,
        "job_state": run.state,
        "state_reason": run.reason,
        "restart_cnt": len(job.runs) - 1,
        "exit_code": (run.exit_code << 8) | run.signal,
        "submit_time": int(job.submit.timestamp()),
        "start_time": int(run.start.timestamp()) if run.start else 0,
        "end_time": int(end.timestamp()) if end else 0,
        "partition": job.partition,
        "nodes": run.node_list,
    }


def squeue_json(jobs: Iterable[FakeJob]) -> str:
    records = [held_record(job, printed) for printed, job, _ in grouped(jobs)]
    return json.dumps({"meta": {}, "errors": [], "jobs": records}, indent=2)


def squeue_pending(jobs: Iterable[FakeJob], delimiter: str = squeue.DELIMITER) -> str:
    """``squeue -r -t PENDING --sort=-p,i -o %i|%r|%P``: highest priority first, then lowest id; one line per
    array element (-r)."""
    waiting = sorted((j for j in jobs if j.pending), key=lambda j: (-j.priority, int(j.raw_id)))
    d = delimiter
    return "".join(f"{job.job_id}{d}{job.run.reason}{d}{job.partition}\n" for job in waiting)


def squeue_ids(jobs: Iterable[FakeJob]) -> str:
    return "".join(f"{job.array_id or job.job_id}\n" for _, job, _ in grouped(jobs) if not job.ended)


def sinfo_rows(nodes: dict[str, str], partitions: list[str], only: str | None) -> str:
    """``sinfo -h -N -o %N|%P|%c|%m|%T|%a``: a row per (node, partition); the default partition has a ``*``."""
    return "".join(
        sinfo.DELIMITER.join((node, f"{p}*" if p == partitions[0] else p, "2", "4000", state, "up")) + "\n"
        for node, state in nodes.items()
        for p in partitions
        if only is None or p == only
    )


def show_config(max_array_size: int) -> str:
    return (
        "Configuration data as of 2026-11-23T16:00:00\n"
        "AccountingStorageType   = accounting_storage/slurmdbd\n"
        f"MaxArraySize            = {max_array_size}\n"
        "MaxJobCount             = 10000\n"
        "MinJobAge               = 300 sec\n"
    )


# --- captured text of the real commands, re-sent in the shapes the project now asks for ----------------------

CAPTURED_SACCT_FIELDS = tuple(f for f in sacct.FIELDS if f != "User")  # captured before User was asked for


def resent_sacct(
    captured: str, delimiter: str, user: str = "root", fields: tuple[str, ...] = CAPTURED_SACCT_FIELDS
) -> str:
    """Captured ``sacct`` rows (``\\x1f``, without User) with ``delimiter`` and a User column."""
    lines = []
    for line in captured.splitlines():
        values = dict(zip(fields, line.split(sacct.DELIMITER), strict=True)) | {"User": user}
        lines.append(delimiter.join(values.get(f, "") for f in sacct.FIELDS))
    return "".join(f"{line}\n" for line in lines)


def json_from_scontrol(captured: str) -> str:
    """Captured ``scontrol -o show job`` records (trusted text of the project's own test jobs) as the
    ``squeue --json`` of the same jobs."""
    from launchers.slurm.scontrol import parse_records
    from launchers.slurm.times import parse_timestamp

    def epoch(value: str | None) -> int:
        stamp = parse_timestamp(value)
        return int(stamp.timestamp()) if stamp else 0

    jobs = []
    for r in parse_records(captured):
        code, _, signal = r.get("ExitCode", "0:0").partition(":")
        task = r.get("ArrayTaskId", "")
        jobs.append(
            {
                "job_id": int(r["JobId"]),
                "array_job_id": int(r.get("ArrayJobId", "0")),
                "array_task_id": int(task) if task.isdigit() else None,
                "array_task_string": "" if task.isdigit() else task,
                "user_name": r.get("UserId", "root(0)").partition("(")[0],
                "account": r.get("Account", ""),
                "comment": r.get("Comment", ""),
                "job_state": r["JobState"],
                "state_reason": r.get("Reason", "None"),
                "restart_cnt": int(r.get("Restarts", "0")),
                "exit_code": (int(code) << 8) | int(signal),
                "submit_time": epoch(r.get("SubmitTime")),
                "start_time": epoch(r.get("StartTime")),
                "end_time": epoch(r.get("EndTime")),
                "nodes": r.get("NodeList", ""),
            }
        )
    return json.dumps({"jobs": jobs})
