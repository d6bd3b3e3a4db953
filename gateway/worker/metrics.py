"""Reading a job's metrics file (JSON lines the trainer appends, one per epoch) into the database, only when
the file changed since the last cycle.

The file is the job's user's: it may be a link, a FIFO, gigabytes, or lines no parser should meet. It is read
through launchers.files (no link below the trusted root, bounded, never blocking), each line parsed with bounded
depth and numbers a database holds; a bad line is skipped, never the cycle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from launchers.files import DEFAULT_MAX_BYTES, JobDataError, open_job_file, parse_json, read_at_most

MAX_EPOCHS = 20_000  # the last ones kept: a row's JSON, and the pages that draw it, stay small
MAX_LINE_BYTES = 64 << 10


class MetricsReader:
    def __init__(self) -> None:
        self._seen: dict[str, tuple[float, int]] = {}

    def forget(self, job_ids: list[str] | None) -> None:
        """Read these jobs' files again next time (all when None): what was read was not committed."""
        if job_ids is None:
            self._seen.clear()
        for job_id in job_ids or ():
            self._seen.pop(job_id, None)

    def read(self, job_id: str, path: Path, root: Path | None = None) -> list[dict[str, Any]] | None:
        """The epochs in ``path``, or None when it has not changed (or does not exist, or is refused). ``root``:
        the folder trusted not to be a link (the gateway's job root; ``/`` when None). Only JSON is parsed:
        nothing a job wrote is ever executed or unpickled."""
        try:
            with open_job_file(path, root) as f:
                key = (f.info.st_mtime, f.info.st_size)
                if self._seen.get(job_id) == key:
                    return None
                self._seen[job_id] = key  # a refused file is not read again until it changes
                data = read_at_most(f.fd, DEFAULT_MAX_BYTES + 1)
        except OSError:
            return None
        if len(data) > DEFAULT_MAX_BYTES:
            return None
        return parse_epochs(data)


def parse_epochs(data: bytes) -> list[dict[str, Any]]:
    epochs: list[dict[str, Any]] = []
    for line in data.splitlines():
        if len(line) > MAX_LINE_BYTES:
            continue
        try:
            value = parse_json(line.decode(errors="replace"))
        except JobDataError:
            continue  # a line being written right now (complete next cycle), or not data at all
        if isinstance(value, dict):  # NaN, infinities and huge numbers arrive as text (strict JSON has none)
            epochs.append(value)
    return epochs[-MAX_EPOCHS:]
