"""What `hpcgw` shows: tables of jobs, sweeps, metrics and algorithms, the live views of `--wait`, and the exit
code a finished job's outcome becomes.

Tables and live views go through rich; the live views write to stderr, so that `--json` on stdout stays one
parseable document.
"""

from __future__ import annotations

import json
import time
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from gateway.client import Client, ClientError
from gateway.schemas import AlgorithmPublic, JobPublic, SweepPublic
from launchers.states import JobState

console = Console()
err = Console(stderr=True)

STATUS_FIELDS = (
    "algorithm",
    "algorithm_version",
    "image",
    "dataset_id",
    "train_data_version_hash",
    "partition",
    "account",
    "exit_code",
    "restarts",
    "submit_time",
    "start_time",
    "end_time",
    "health_reason",
    "health_restarts",
    "best_epoch",
)


def exit_code(state: JobState, code: int | None) -> int:
    """One mapping for the gateway's and the launchers' jobs, so a script can tell a time-out (124) or a
    cancellation (130) from the trainer's own failure (its code, or 1 when it left none)."""
    if state in (JobState.SUCCEEDED, JobState.STOPPED_EARLY):
        return 0  # early stopping is how a run is meant to end when it stops improving
    if state is JobState.CANCELLED:
        return 130
    if state is JobState.TIMEOUT:
        return 124
    if state in (JobState.HUNG, JobState.DIVERGED):
        return 1  # Slurm's record is a cancellation's; the trainer left no code of its own
    return code or 1


def exit_code_for(job: JobPublic) -> int:
    return exit_code(job.state, job.exit_code)


def elapsed(job: JobPublic) -> str:
    """H:MM:SS as squeue prints it; a running job's clock is still going."""
    if job.start_time is None:
        return "-"
    end = job.end_time or time.time()
    seconds = int((end if isinstance(end, float) else end.timestamp()) - job.start_time.timestamp())
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def jobs_table(items: list[JobPublic], title: str | None = None) -> Table:
    """A better squeue: team, state, Slurm's reason and queue position, nodes, elapsed."""
    table = Table(
        "JOBID",
        "NAME",
        "TEAM",
        "USER",
        "STATE",
        "SLURM",
        "REASON",
        "POS",
        "NODES",
        "ELAPSED",
        title=title,
        title_justify="left",
    )
    for j in items:
        table.add_row(
            j.id,
            j.name,
            j.team,
            j.user,
            j.state.value,
            j.slurm_job_id or "-",
            j.reason or "-",
            str(j.position_in_queue or "-"),
            str(j.resources.nodes),
            elapsed(j),
        )
    return table


def print_job(job: JobPublic) -> None:
    """`hpcgw status`: the squeue row, then what the row has no room for."""
    console.print(jobs_table([job]))
    for key in STATUS_FIELDS:
        console.print(f"{key:>24}: {getattr(job, key)}", highlight=False, markup=False)
    if job.provenance:
        versions = job.provenance.get("versions") or {}
        line = f"world size {job.provenance.get('world_size')}, model sha256 {job.provenance.get('model_sha256')}"
        console.print(f"{'provenance':>24}: {line}, {json.dumps(versions)}", highlight=False, markup=False)
    console.print(f"{'parameters':>24}: {json.dumps(job.parameters)}", highlight=False, markup=False)


def metrics_table(epochs: list[dict[str, Any]]) -> Table:
    """One row per epoch; the columns are every metric any epoch reported, in the order first seen."""
    keys: list[str] = []
    for epoch in epochs:
        keys += [k for k in epoch if k not in keys]
    table = Table(*keys)
    for epoch in epochs:
        table.add_row(*(str(epoch.get(k, "")) for k in keys))
    return table


def algorithms_table(items: list[AlgorithmPublic]) -> Table:
    """Each algorithm with its versions, and the image its current version runs."""
    table = Table("NAME", "TEAM", "CURRENT", "VERSIONS", "IMAGE")
    for a in items:
        current = next((v for v in a.versions if v.version == a.current_version), None)
        table.add_row(
            a.name,
            a.team,
            a.current_version,
            ",".join(v.version for v in a.versions),
            current.image if current else "-",
        )
    return table


def follow(c: Client, job_id: str, *, quiet: bool = False) -> JobPublic:
    """A live view of the job's state and epochs done, until it ends; survives a gateway restart."""
    if quiet:
        return c.wait(job_id, timeout_s=10**7)

    def view(job: JobPublic, epochs: int) -> Table:
        table = jobs_table([job])
        table.caption = f"epochs done: {epochs}"
        return table

    with Live(console=err, refresh_per_second=4, transient=False) as live:
        while True:
            try:
                job = c.job(job_id)
                epochs = len(c.metrics(job_id).epochs) if job.state is not JobState.ACCEPTED else 0
            except ClientError as exc:
                live.console.print(f"gateway: {exc}")
                time.sleep(2)
                continue
            live.update(view(job, epochs))
            if job.state.is_terminal:
                return job
            time.sleep(1)


def sweep_table(sweep: SweepPublic) -> Table:
    """Each task's state and epochs done, with the counts by state in the caption."""
    table = Table(
        "TASK", "JOB", "STATE", "SLURM", "EPOCHS", "PARAMETERS", title=f"sweep {sweep.id}", title_justify="left"
    )
    for task in sweep.tasks:
        epochs = str(task.final_metrics.get("epoch", "-")) if task.final_metrics else "-"
        table.add_row(
            str(task.index),
            task.job_id,
            task.state.value,
            task.slurm_job_id or "-",
            epochs,
            " ".join(f"{k}={v}" for k, v in task.parameters.items()),
        )
    table.caption = " ".join(f"{k}={v}" for k, v in sorted(sweep.counts.items()))
    return table


def follow_sweep(c: Client, sweep_id: str, *, quiet: bool = False) -> SweepPublic:
    """A live view until every task ended; a gateway restart only pauses it (the client retries)."""
    current = c.sweep(sweep_id)
    if quiet:
        while not all(t.state.is_terminal for t in current.tasks):
            time.sleep(1)
            current = c.sweep(sweep_id)
        return current
    with Live(sweep_table(current), console=err, refresh_per_second=2, transient=False) as live:
        while not all(t.state.is_terminal for t in current.tasks):
            time.sleep(1)
            current = c.sweep(sweep_id)
            live.update(sweep_table(current))
    return current
