"""Reading `sacct`: one parser for the rows every part of the project asks for.

Job names and comments are user text, and a user can put any byte in them (bash's ``$'\x1f\n…'``): a comment
with a newline followed by a line with the right number of separators would read as a row of its own. Each call
therefore asks for a fresh random delimiter (:func:`new_delimiter`) that no job submitted before the call can
contain, and a line counts only with exactly as many of them as there are fields. Whose a row is (User,
Account, Submit) is the caller's check.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from launchers.slurm.ids import is_step
from launchers.slurm.times import parse_timestamp
from launchers.states import JobState, from_slurm

log = logging.getLogger(__name__)
DELIMITER = "\x1f"  # the default for captured text; calls to Slurm use new_delimiter()
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
    "User",
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
    user: str = ""

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


def new_delimiter() -> str:
    """A field delimiter no job's text can hold: random, and made in this call."""
    return f"\x1f{secrets.token_hex(8)}\x1f"


def delimiter_of(argv: Sequence[str]) -> str:
    """The delimiter an argv of this module asks for (for whoever reads its output)."""
    for arg in argv:
        if arg.startswith("--delimiter="):
            return arg.removeprefix("--delimiter=")
    return "|"


def sacct_argv(
    job_ids: Iterable[str],
    *,
    all_steps: bool = False,
    attempts: bool = False,
    extra: Sequence[str] = (),
    delimiter: str = DELIMITER,
) -> list[str]:
    """``attempts`` (``-D``): one row per attempt of a requeued job, oldest first, not only the latest."""
    ids = ",".join(job_ids)
    argv = ["sacct", "-n", "-P", f"--delimiter={delimiter}", "-o", ",".join(FIELDS), "-j", ids]
    if attempts:
        argv.insert(1, "-D")
    if not all_steps:
        argv.insert(1, "-X")
    return [*argv, *extra]


def parse_sacct(text: str, fields: Sequence[str] = FIELDS, delimiter: str = DELIMITER) -> list[SacctRow]:
    """Rows printed with ``fields`` and ``delimiter`` (the argv's). A line with the wrong number of fields is
    text from a name or comment with a newline in it: it is skipped, never misread; so is a row whose numbers
    or times do not read (logged, once per call)."""
    rows = []
    skipped = 0
    for line in text.split("\n"):
        parts = line.split(delimiter)
        if len(parts) != len(fields):
            continue
        try:
            rows.append(_row(dict(zip(fields, parts, strict=True))))
        except (ValueError, KeyError):
            skipped += 1
    if skipped:
        log.warning("sacct: %d row(s) that do not read were skipped", skipped)
    return rows


def _row(f: dict[str, str]) -> SacctRow:
    code, _, sig = f["ExitCode"].partition(":")
    return SacctRow(
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
        user=f.get("User", ""),
    )


COMMENT_FIELDS = ("JobID", "User", "Account", "Submit", "Comment")


def comments_argv(since: str = "now-7days", delimiter: str = DELIMITER) -> list[str]:
    """Every job since ``since`` with whose it is and its comment (last: user text that may hold newlines).
    JobID, not JobIDRaw: an array element's raw id is its own number, its JobID names the array."""
    fields = ",".join(COMMENT_FIELDS)
    return ["sacct", "-X", "-n", "-P", f"--delimiter={delimiter}", "-S", since, "-o", fields]


def parse_comment_rows(text: str, delimiter: str) -> list[dict[str, str]]:
    """``comments_argv``'s rows as {field: value}; lines without exactly the right delimiters are skipped."""
    rows = []
    for line in text.split("\n"):
        parts = line.split(delimiter)
        if len(parts) == len(COMMENT_FIELDS):
            rows.append(dict(zip(COMMENT_FIELDS, parts, strict=True)))
    return rows
