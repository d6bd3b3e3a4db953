"""Reading ``squeue``: pending jobs with their reason and queue position, and every job slurmctld holds (its
JSON output: whose job, which account, its comment, state and times, with no text of a user's to misread).

squeue shows every user's jobs, and names and comments are user text that may hold any byte: text output is
asked for with a random delimiter made for the call (:func:`launchers.slurm.sacct.new_delimiter`), so no line a
user wrote into a name or comment can pass for a record."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger(__name__)
DELIMITER = "\x1f"  # the default for captured text; calls to Slurm use a fresh one
JSON_ARGV = ["squeue", "--json"]  # Slurm 22.05: every job slurmctld holds (it ignores -j and -t with --json)
IDS_ARGV = ["squeue", "-h", "-o", "%A"]


def pending_argv(delimiter: str = DELIMITER) -> list[str]:
    """-r: one line per pending array element (without it they collapse to ``100_[0-49]``), so that each element
    of a coalesced array or a sweep gets its own reason and queue position."""
    return ["squeue", "-h", "-r", "-t", "PENDING", "--sort=-p,i", "-o", f"%i{delimiter}%r{delimiter}%P"]


@dataclass
class PendingInfo:
    reason: str | None
    partition: str
    position: int  # 1-based, among pending jobs of the same partition, in priority order


def parse_pending(text: str, delimiter: str = DELIMITER) -> dict[str, PendingInfo]:
    """A line without exactly two delimiters is skipped: none of the fields asked for is user text."""
    result: dict[str, PendingInfo] = {}
    per_partition: dict[str, int] = {}
    for line in text.split("\n"):
        parts = line.split(delimiter)
        if len(parts) != 3:
            continue
        job_id, reason, partition = parts
        per_partition[partition] = per_partition.get(partition, 0) + 1
        result[job_id] = PendingInfo(
            reason=None if reason in ("", "None") else reason, partition=partition, position=per_partition[partition]
        )
    return result


@dataclass(frozen=True)
class HeldJob:
    """One record of slurmctld: a job, an array element, or an array's pending elements as one range."""

    job_id: str  # as squeue prints it: 123, 123_4, 123_[5-9%2]
    user: str
    account: str
    comment: str
    state: str
    reason: str | None
    submit: datetime | None
    start: datetime | None
    end: datetime | None
    exit_code: int | None
    exit_signal: int
    node_list: str
    restarts: int


def parse_jobs_json(text: str) -> list[HeldJob]:
    """``squeue --json``. A record that does not read is skipped (and counted in the log), never the whole list;
    text that is no JSON object raises ValueError (squeue did not answer as asked)."""
    data = json.loads(text)
    if not isinstance(data, dict) or not isinstance(data.get("jobs"), list):
        raise ValueError("squeue --json printed no job list")
    jobs: list[HeldJob] = []
    skipped = 0
    for entry in data["jobs"]:
        try:
            jobs.append(_held(entry))
        except (KeyError, TypeError, ValueError, OverflowError, OSError):
            skipped += 1
    if skipped:
        log.warning("squeue --json: %d record(s) that do not read were skipped", skipped)
    return jobs


def _held(entry: dict[str, Any]) -> HeldJob:
    raw = _int(entry["job_id"])
    array = _int(entry.get("array_job_id") or 0)
    task = entry.get("array_task_id")
    tasks = entry.get("array_task_string") or ""
    if array and task is not None:
        job_id = f"{array}_{_int(task)}"
    elif array and tasks:
        job_id = f"{array}_[{_text(tasks)}]"
    else:
        job_id = str(raw)
    status = _int(entry.get("exit_code") or 0)  # a wait status: the exit code in the high byte
    return HeldJob(
        job_id=job_id,
        user=_text(entry["user_name"]),
        account=_text(entry.get("account") or ""),
        comment=_text(entry.get("comment") or ""),
        state=_text(entry["job_state"]),
        reason=None if entry.get("state_reason") in (None, "", "None") else _text(entry["state_reason"]),
        submit=_time(entry.get("submit_time")),
        start=_time(entry.get("start_time")),
        end=_time(entry.get("end_time")),
        exit_code=(status >> 8) & 0xFF,
        exit_signal=status & 0x7F,
        node_list=_text(entry.get("nodes") or ""),
        restarts=_int(entry.get("restart_cnt") or 0),
    )


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"not a count: {value!r}")
    return value


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"not text: {value!r}")
    return value


def _time(value: object) -> datetime | None:
    """Seconds since the epoch; 0 for a time that has not come."""
    seconds = _int(value or 0)
    return datetime.fromtimestamp(seconds, UTC) if seconds else None
