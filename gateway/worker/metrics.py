"""Reading a job's metrics file (JSON lines the trainer appends, one per epoch) into the database, only when
the file changed since the last cycle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from launchers.files import read_job_file
from launchers.runtime.heartbeat import finite_or_text


class MetricsReader:
    def __init__(self) -> None:
        self._seen: dict[str, tuple[float, int]] = {}

    def read(self, job_id: str, path: Path) -> list[dict[str, Any]] | None:
        """The epochs in ``path``, or None when it has not changed (or does not exist yet). Only JSON is
        parsed: nothing a job wrote is ever executed or unpickled."""
        try:
            stat = path.stat()
        except OSError:
            return None
        key = (stat.st_mtime, stat.st_size)
        if self._seen.get(job_id) == key:
            return None
        epochs: list[dict[str, Any]] = []
        try:
            text = read_job_file(path)  # a regular file only: never a symlink into another team's folder
        except OSError:
            return None
        for line in text.splitlines():
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line being written right now; complete next cycle
            if isinstance(value, dict):  # NaN and infinities as strings: strict JSON (PostgreSQL's, the API's)
                epochs.append({k: finite_or_text(v) for k, v in value.items()})
        self._seen[job_id] = key
        return epochs
