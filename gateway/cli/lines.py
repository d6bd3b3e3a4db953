"""Job lists as squeue prints them: fixed-width fields picked by format codes, 80 columns by default.

A Slurm user reads ``squeue`` at a glance and copies a job id from it; a boxed table with truncated cells
(``9214…``) is neither. ``-o/--format`` takes squeue's syntax: ``%.16i`` is field ``i`` right-justified in 16
columns, ``%8j`` left-justified in 8, ``%R`` as wide as it is (the last field of the default is cut so that the
line fits). Codes, as close to squeue's as the gateway's fields allow:

    %i id   %j name   %u user   %a team   %P partition   %t state (2 letters)   %T state   %M time
    %D nodes   %R reason   %A Slurm id   %Q queue position   %V submitted   %x exit code
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from gateway.schemas import JobPublic
from launchers.states import JobState

WIDTH = 80
DEFAULT_FORMAT = "%.16i %.9P %.8j %.8u %.2t %.10M %.5D %R"
WIDE_FORMAT = "%.16i %.8a %.9P %.20j %.8u %.13T %.12A %.10M %.5D %.4Q %R"
_CODE = re.compile(r"%(\.)?(\d+)?([A-Za-z%])")

# squeue's two-letter codes where Slurm has the state; the gateway's own states get their own.
COMPACT = {
    JobState.ACCEPTED: "AC",
    JobState.QUEUED: "PD",
    JobState.REQUEUED: "RQ",
    JobState.LAUNCHING: "CF",
    JobState.RUNNING: "R",
    JobState.SUCCEEDED: "CD",
    JobState.FAILED: "F",
    JobState.CANCELLED: "CA",
    JobState.TIMEOUT: "TO",
    JobState.HUNG: "HU",
    JobState.DIVERGED: "DV",
    JobState.STOPPED_EARLY: "ES",
    JobState.UNKNOWN: "??",
}


def elapsed(job: JobPublic) -> str:
    """squeue's TIME: [D-]H:MM:SS, or M:SS under an hour; a running job's clock is still going."""
    if job.start_time is None:
        return "0:00"
    end = job.end_time.timestamp() if job.end_time else time.time()
    seconds = max(0, int(end - job.start_time.timestamp()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}-{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


FIELDS: dict[str, tuple[str, Callable[[JobPublic], str]]] = {
    "i": ("JOBID", lambda j: j.id),
    "j": ("NAME", lambda j: j.name),
    "u": ("USER", lambda j: j.user),
    "a": ("TEAM", lambda j: j.team),
    "P": ("PARTITION", lambda j: j.partition),
    "t": ("ST", lambda j: COMPACT[j.state]),
    "T": ("STATE", lambda j: j.state.value),
    "M": ("TIME", elapsed),
    "D": ("NODES", lambda j: str(j.resources.nodes)),
    "R": ("REASON", lambda j: j.reason or "-"),
    "A": ("SLURMID", lambda j: j.slurm_job_id or "-"),
    "Q": ("POS", lambda j: str(j.position_in_queue) if j.position_in_queue else "-"),
    "V": ("SUBMITTED", lambda j: j.submit_time.strftime("%Y-%m-%dT%H:%M:%S")),
    "x": ("EXIT", lambda j: "-" if j.exit_code is None else str(j.exit_code)),
}


class FormatError(ValueError):
    """A format code this module does not know."""


def _parts(fmt: str) -> list[str | tuple[bool, int | None, str]]:
    parts: list[str | tuple[bool, int | None, str]] = []
    at = 0
    for match in _CODE.finditer(fmt):
        if match.start() > at:
            parts.append(fmt[at : match.start()])
        right, width, code = bool(match.group(1)), match.group(2), match.group(3)
        if code == "%":
            parts.append("%")
        elif code not in FIELDS:
            known = " ".join(f"%{c}" for c in FIELDS)
            raise FormatError(f"unknown format code %{code} (known: {known})")
        else:
            parts.append((right, int(width) if width else None, code))
        at = match.end()
    if at < len(fmt):
        parts.append(fmt[at:])
    return parts


def _cell(text: str, right: bool, width: int | None) -> str:
    if width is None:
        return text
    text = text[:width]
    return text.rjust(width) if right else text.ljust(width)


def render(jobs: list[JobPublic], fmt: str = DEFAULT_FORMAT, *, header: bool = True, width: int | None = WIDTH) -> str:
    """The lines, each cut at ``width`` (None: never cut), header first."""
    parts = _parts(fmt)
    rows = []
    if header:
        rows.append("".join(p if isinstance(p, str) else _cell(FIELDS[p[2]][0], p[0], p[1]) for p in parts))
    for job in jobs:
        rows.append("".join(p if isinstance(p, str) else _cell(FIELDS[p[2]][1](job), p[0], p[1]) for p in parts))
    lines = [row.rstrip() for row in rows]
    return "\n".join(line[:width] if width else line for line in lines)


def change_line(job: JobPublic, epochs: int | None = None) -> str:
    """One line of a plain (not a terminal) follow: everything a live view shows, so that a new line always
    says what changed."""
    parts = [job.id, job.state.value]
    if job.slurm_job_id:
        parts.append(f"slurm {job.slurm_job_id} {job.slurm_state or ''}".rstrip())
    if job.reason:
        parts.append(f"reason {job.reason}")
    if job.position_in_queue:
        parts.append(f"position {job.position_in_queue}")
    if epochs:
        parts.append(f"epochs {epochs}")
    return "  ".join(parts)
