"""Per-rank heartbeats: how a job tells the gateway that its ranks are alive and still making progress.

Slurm sees a rank stuck in an allreduce as RUNNING until the time limit. So a thread in each rank's task process
(not in the trainer, which may be the thing that hangs) rewrites ``markers/<job>.<restart>.hb.<rank>`` every
``interval_s``, and at once when the trainer reports progress. What it writes:

- ``time``: when it was written. A rank whose node or process is frozen stops writing, so a stale ``time``
  names the node to leave out of the next attempt.
- ``progress`` and ``progress_at``: the trainer's last report, and when it changed. A trainer reports through
  the file named by ``HPCGW_PROGRESS_FILE`` (one JSON object per line, e.g. ``{"step": 120, "loss": 0.4}``,
  appended or rewritten), and rank 0's ``METRICS_FILE`` lines count as reports too. A trainer that reports
  nothing still gets these process-level heartbeats; its progress is then only that its process is alive.

The gateway's worker reads these files in its poll (gateway/worker/health.py); no Slurm call is involved.
"""

from __future__ import annotations

import json
import math
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from launchers.runtime.markers import write_atomic

DEFAULT_INTERVAL_S = 10.0
WATCH_S = 0.5  # how often the thread looks for a new progress report between two heartbeats
TAIL_BYTES = 4096  # a report is one short JSON line: the last one is within the file's last few KiB


def last_report(path: Path | None) -> tuple[dict[str, Any], float] | None:
    """The last complete JSON object in ``path`` and the file's modification time, or None."""
    if path is None:
        return None
    try:
        with open(path, "rb") as fh:
            stat = os.fstat(fh.fileno())
            fh.seek(max(0, stat.st_size - TAIL_BYTES))
            lines = fh.read().decode(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line being written, or the cut start of the tail
        if isinstance(value, dict):
            return {k: finite_or_text(v) for k, v in value.items() if isinstance(k, str)}, stat.st_mtime
    return None


def finite_or_text(value: Any) -> Any:
    """NaN and infinities as strings: strict JSON (the database's, the API's) has no literal for them."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


class Heartbeat:
    def __init__(
        self,
        path: Path,
        rank: int,
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
        progress_file: Path | None = None,
        metrics_file: Path | None = None,
    ) -> None:
        self.path = path
        self.rank = rank
        self.interval_s = max(0.2, interval_s)
        self.sources = [p for p in (progress_file, metrics_file) if p is not None]
        self.beats = 0
        self.progress: dict[str, Any] | None = None
        self.progress_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hpcgw-heartbeat", daemon=True)
        self._host = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
        self._since = time.time() - 1.0  # a report older than this run (a requeue's earlier run) is not progress

    def start(self) -> Heartbeat:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.beat()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(min(WATCH_S, self.interval_s)):
            changed = self._look()
            if changed or time.monotonic() - last >= self.interval_s:
                self.beat()
                last = time.monotonic()

    def _look(self) -> bool:
        """Take the newest report of the sources; True when it is newer than the one held."""
        newest: tuple[dict[str, Any], float] | None = None
        for source in self.sources:
            found = last_report(source)
            if found is not None and found[1] >= self._since and (newest is None or found[1] > newest[1]):
                newest = found
        if newest is None or (self.progress_at is not None and newest[1] <= self.progress_at):
            return False
        self.progress, self.progress_at = newest
        return True

    def beat(self) -> None:
        self.beats += 1
        record = {
            "rank": self.rank,
            "host": self._host,
            "pid": os.getpid(),
            "time": time.time(),
            "beats": self.beats,
            "interval_s": self.interval_s,
            "progress": self.progress,
            "progress_at": self.progress_at,
        }
        try:
            write_atomic(self.path, json.dumps(record))
        except OSError:
            pass  # a full or unreachable shared filesystem: the gateway sees a stale heartbeat, which is the truth
