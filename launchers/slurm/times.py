"""Slurm's two kinds of time: timestamps (sacct, scontrol) and durations (``--time``), and sbatch's memory
sizes. One parser each, so that every layer reads them the same way."""

from __future__ import annotations

import re
from datetime import UTC, datetime

_DURATION_RE = re.compile(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?")
_MEM_RE = re.compile(r"(\d+(?:\.\d+)?)([KMGT]?)B?")
_NO_TIME = frozenset({"", "Unknown", "None", "(null)", "N/A"})


def parse_timestamp(value: str | None) -> datetime | None:
    """A timestamp as sacct and scontrol print it (local time, no offset) -> an aware UTC datetime; ``None``
    for the placeholders Slurm prints for times that have not happened yet."""
    if value is None or value.strip() in _NO_TIME:
        return None
    try:
        return datetime.fromisoformat(value.strip()).astimezone(UTC)
    except ValueError:
        return None


def parse_duration_min(value: str) -> int:
    """Slurm's time formats: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S -> whole minutes (rounded up).
    Raises ValueError for anything else, or a limit that is not positive."""
    m = _DURATION_RE.fullmatch(value.strip())
    if m is None:
        raise ValueError(f"{value!r} is not a Slurm time (M, M:S, H:M:S, D-H, D-H:M, D-H:M:S)")
    days, a, b, c = (int(x) if x else None for x in m.groups())
    if days is not None:  # D-H[:M[:S]]
        seconds = days * 86400 + (a or 0) * 3600 + (b or 0) * 60 + (c or 0)
    elif c is not None:  # H:M:S
        seconds = (a or 0) * 3600 + (b or 0) * 60 + c
    elif b is not None:  # M:S
        seconds = (a or 0) * 60 + b
    else:  # M
        seconds = (a or 0) * 60
    if seconds <= 0:
        raise ValueError(f"{value!r} is not a positive time limit")
    return -(-seconds // 60)


def parse_mem_gb(value: str) -> float:
    """sbatch's --mem: a number with an optional K/M/G/T suffix (default megabytes) -> GB."""
    m = _MEM_RE.fullmatch(value.strip().upper())
    if m is None:
        raise ValueError(f"{value!r} is not a memory size like 4G or 4000M")
    factor = {"K": 1 / 1024**2, "M": 1 / 1024, "": 1 / 1024, "G": 1, "T": 1024}[m.group(2)]
    return float(m.group(1)) * factor
