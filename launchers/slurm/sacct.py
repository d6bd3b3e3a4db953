"""Reading `sacct`: one parser for the rows every part of the project asks for.

Rows are requested with a delimiter that cannot appear in user-chosen fields (job names and comments are user
input), so splitting is exact.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from launchers.slurm.ids import is_step
from launchers.slurm.times import parse_timestamp
from launchers.states import JobState, from_slurm

DELIMITER = "\x1f"  # ASCII unit separator: Slurm never puts it in a field and users cannot type it in one
FIELDS: tuple[str, ...] = (
    "JobID",
    "JobIDRaw",
    "JobName",
    "State",
    "ExitCode",
    "Partition",
    "Account",
    "NNodes",
    "NodeList",
    "Submit",
    "Start",
    "End",
    "Elapsed",
    "Reason",
    "Comment",  # last: user text; the gateway's comment names its job (a reused Slurm id has another)
)


@dataclass(frozen=True)
class SacctRow:
    job_id: str  # as sacct prints it: 123, 123_4, 123_[4-11%3], 123.batch, 123.0
    job_id_raw: str
    name: str
    slurm_state: str
    exit_code: int
    exit_signal: int
    partition: str
    account: str
    nodes: int
    node_list: str
    submit: datetime | None  # aware, UTC
    start: datetime | None
    end: datetime | None
    elapsed: str
    reason: str
    comment: str = ""

    @property
    def is_step(self) -> bool:
        return is_step(self.job_id)

    @property
    def settled(self) -> bool:
        """Terminal and complete. slurmctld sends records to slurmdbd asynchronously: a job that ends within a
        second of starting can first appear COMPLETED with an empty partition or end time."""
        return self.state.is_terminal and self.end is not None and bool(self.partition or self.is_step)

    @property
    def state(self) -> JobState:
        return from_slurm(self.slurm_state)


def sacct_argv(
    job_ids: Iterable[str], *, all_steps: bool = False, attempts: bool = False, extra: Sequence[str] = ()
) -> list[str]:
    """``attempts`` (``-D``): one row per attempt of a requeued job, oldest first, not only the latest."""
    ids = ",".join(job_ids)
    argv = ["sacct", "-n", "-P", f"--delimiter={DELIMITER}", "-o", ",".join(FIELDS), "-j", ids]
    if attempts:
        argv.insert(1, "-D")
    if not all_steps:
        argv.insert(1, "-X")
    return [*argv, *extra]


def parse_sacct(text: str, fields: Sequence[str] = FIELDS) -> list[SacctRow]:
    """Rows printed with ``fields`` (the argv's). A line with the wrong number of fields is the tail of a comment
    with a newline in it (someone else's job under a reused id): it is skipped, never misread."""
    rows = []
    for line in text.splitlines():
        parts = line.split(DELIMITER)
        if len(parts) != len(fields):
            continue
        f = dict(zip(fields, parts, strict=True))
        code, _, sig = f["ExitCode"].partition(":")
        rows.append(
            SacctRow(
                job_id=f["JobID"],
                job_id_raw=f["JobIDRaw"],
                name=f["JobName"],
                slurm_state=f["State"],
                exit_code=int(code or 0),
                exit_signal=int(sig or 0),
                partition=f["Partition"],
                account=f["Account"],
                nodes=int(f["NNodes"] or 0),
                node_list=f["NodeList"],
                submit=parse_timestamp(f["Submit"]),
                start=parse_timestamp(f["Start"]),
                end=parse_timestamp(f["End"]),
                elapsed=f["Elapsed"],
                reason=f["Reason"],
                comment=f.get("Comment", ""),
            )
        )
    return rows


def comments_argv(since: str = "now-7days") -> list[str]:
    """Every job since ``since`` with its comment (comments are user text: the unit separator splits them).
    JobID, not JobIDRaw: an array element's raw id is its own number, its JobID names the array."""
    return ["sacct", "-X", "-n", "-P", f"--delimiter={DELIMITER}", "-S", since, "-o", "JobID,Comment"]
