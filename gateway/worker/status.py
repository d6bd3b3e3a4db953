"""The worker's status row: written by the active worker at each cycle, read by every API process.

The worker runs in a process of its own (or on another host), so what /healthz, /metrics and the partition
checks of a submission know of it travels through the database. One row, read by primary key and cached for a
second per API process: a thousand GETs a second cost one read a second.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any, Protocol

from sqlalchemy.engine import Engine
from sqlmodel import Session

from gateway.store.models import WorkerStatus, aware, utcnow
from gateway.worker.stats import WorkerStats
from launchers.slurm.sinfo import PartitionSize

ROW = "worker"
CACHE_S = 1.0


def take_over(engine: Engine, holder: str) -> int:
    """Record a new active worker; returns its epoch (one more than the last)."""
    with Session(engine) as session:
        row = session.get(WorkerStatus, ROW) or WorkerStatus(name=ROW)
        row.epoch += 1
        row.holder, row.started_at, row.heartbeat_at = holder, utcnow(), utcnow()
        session.add(row)
        session.commit()
        return row.epoch


def publish(engine: Engine, epoch: int, stats: WorkerStats, partitions: dict[str, PartitionSize]) -> None:
    """The cycle's heartbeat; a worker whose epoch was overtaken leaves the row to its successor."""
    with Session(engine) as session:
        row = session.get(WorkerStatus, ROW)
        if row is None or row.epoch != epoch:
            return
        row.heartbeat_at = utcnow()
        row.stats = dataclasses.asdict(stats)
        row.partitions = {name: dataclasses.asdict(size) for name, size in partitions.items()}
        session.add(row)
        session.commit()


def health(s: WorkerStats, alive: bool, holder: str | None, epoch: int, detailed: bool = False) -> dict[str, Any]:
    """What /healthz says of a worker, wherever it runs. Anyone may ask (a load balancer): counts and states
    only. ``detailed`` (an admin's token) adds what names hosts, jobs and paths: the worker's host and pid, the
    last errors' texts, the jobs whose tracking fails and why."""
    answer: dict[str, Any] = {
        "worker_alive": alive,
        "worker_epoch": epoch,
        "accounting": "ok" if s.accounting_ok else "unavailable: tracking through squeue and scontrol",
        "tracking_source": s.source,
        "slurm_reachable": s.slurm_reachable,
        "cycles": s.cycles,
        "poll_cycles": s.poll_cycles,
        "slurm_commands": s.slurm_commands,
        "interval_s": s.interval_s,
        "tracking_failures": s.tracking_failures,
        "jobs_failing": s.jobs_failing,
        "cycle_failures": s.cycle_failures,
        "last_cycle_failed": s.last_cycle_failed,
    }
    if detailed:
        answer |= {
            "worker": holder,
            "last_error": s.last_error,
            "last_cycle_error": s.last_cycle_error,
            "failing_jobs": s.failing_jobs,
        }
    return answer


def healthy(answer: dict[str, Any]) -> bool:
    """A worker that runs, whose last cycle went through and whose jobs are all tracked."""
    return bool(answer["worker_alive"]) and not answer["last_cycle_failed"] and not answer["jobs_failing"]


class LocalWorker(Protocol):
    """The part of gateway.worker.loop.Worker that an in-process API uses."""

    partition_sizes: dict[str, PartitionSize]
    stats: WorkerStats

    def wake(self) -> None: ...

    def health(self, detailed: bool = False) -> dict[str, Any]: ...


class WorkerView:
    """What the API knows of the worker: the in-process one's memory when there is one (tests, one-process
    runs), else the status row."""

    def __init__(self, engine: Engine, local: LocalWorker | None, poll_interval_s: float) -> None:
        self.engine, self.local = engine, local
        # A worker that has not written for this long is not working: it died, or lost its database.
        self.stale_after_s = max(30.0, 4 * poll_interval_s)
        self._row: WorkerStatus | None = None
        self._read_at = 0.0
        self._lock = threading.Lock()

    def wake(self) -> None:
        """An in-process worker is woken at once; one in its own process sees new rows within a fraction of a
        second by itself (see Worker.has_new_work)."""
        if self.local is not None:
            self.local.wake()

    @property
    def partition_sizes(self) -> dict[str, PartitionSize]:
        if self.local is not None:
            return self.local.partition_sizes
        row = self._status()
        return {} if row is None else {name: PartitionSize(**size) for name, size in row.partitions.items()}

    @property
    def stats(self) -> WorkerStats:
        if self.local is not None:
            return self.local.stats
        row = self._status()
        known = {f.name for f in dataclasses.fields(WorkerStats)}
        return WorkerStats(**{k: v for k, v in (row.stats if row else {}).items() if k in known})

    def health(self, detailed: bool = False) -> dict[str, Any]:
        if self.local is not None:
            return self.local.health(detailed)
        row = self._status()
        beat = aware(row.heartbeat_at) if row is not None else None
        age = (utcnow() - beat).total_seconds() if beat is not None else None
        alive = age is not None and age < self.stale_after_s
        holder = row.holder if row is not None else None
        answer = health(self.stats, alive, holder, row.epoch if row else 0, detailed)
        return answer | {"worker_heartbeat_age_s": None if age is None else round(age, 3)}

    def _status(self) -> WorkerStatus | None:
        with self._lock:
            if time.monotonic() - self._read_at > CACHE_S:
                with Session(self.engine, expire_on_commit=False) as session:
                    self._row = session.get(WorkerStatus, ROW)
                self._read_at = time.monotonic()
            return self._row
