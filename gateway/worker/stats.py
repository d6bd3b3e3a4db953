"""The worker's own counters, read by /healthz and /metrics."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class WorkerStats:
    cycles: int = 0
    poll_cycles: int = 0
    slurm_commands: int = 0
    last_cycle_s: float = 0.0
    cycle_s_sum: float = 0.0
    accounting_ok: bool = True
    source: str = "sacct"
    slurm_reachable: bool = True
    last_error: str | None = None
    interval_s: float = 0.0
    dispatched: int = 0
    failures_by_team: dict[str, int] = field(default_factory=dict)
    # One job's apply that raised (gateway.worker.isolation): counted, and the job marked, the others tracked on.
    tracking_failures: int = 0  # every failed apply of one job, since the worker started
    jobs_failing: int = 0  # jobs whose last apply failed
    failing_jobs: dict[str, str] = field(default_factory=dict)  # some of them: job id -> reason (admins only)
    # A whole cycle that raised (the database away, a commit refused): nothing of it was written.
    cycle_failures: int = 0
    last_cycle_failed: bool = False
    last_cycle_error: str | None = None
