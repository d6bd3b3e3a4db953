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
