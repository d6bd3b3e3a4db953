"""What `hpcgw` shows: tables of jobs, sweeps, metrics and algorithms, the live views of `--wait`, and the exit
code a finished job's outcome becomes.

Tables and live views go through rich; the live views write to stderr, so that `--json` on stdout stays one
parseable document.
"""

from __future__ import annotations

import json
import time
from typing import Any

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from gateway.cli import lines
from gateway.client import Client, ClientError
from gateway.schemas import AlgorithmPublic, JobPublic, SweepPublic
from launchers.states import JobState

console = Console()
err = Console(stderr=True)

# `hpcgw status`'s lines: (label, field). Labels of at most 12 characters, so that a 64-digit hash fits an
# 80-column terminal beside its label.
STATUS_FIELDS = (
    ("algorithm", "algorithm"),
    ("version", "algorithm_version"),
    ("framework", "framework"),
    ("image", "image"),
    ("dataset", "dataset_id"),
    ("data_version", "train_data_version_hash"),
    ("partition", "partition"),
    ("account", "account"),
    ("slurm_job", "slurm_job_id"),
    ("exit_code", "exit_code"),
    ("restarts", "restarts"),
    ("submitted", "submit_time"),
    ("started", "start_time"),
    ("ended", "end_time"),
    ("health", "health_reason"),
    ("best_epoch", "best_epoch"),
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


def print_job(job: JobPublic) -> None:
    """`hpcgw status`: the squeue line, then what it has no room for, as aligned key: value lines that are never
    wrapped (ids and hashes are copied from here)."""
    typer.echo(lines.render([job]))
    values: list[tuple[str, object]] = [(label, getattr(job, name)) for label, name in STATUS_FIELDS]
    if job.provenance:
        versions = job.provenance.get("versions") or {}
        values.append(("world_size", job.provenance.get("world_size")))
        values.append(("model_sha256", job.provenance.get("model_sha256")))
        values.append(("versions", ", ".join(f"{k} {v}" for k, v in sorted(versions.items()) if v)))
    values.append(("parameters", json.dumps(job.parameters)))
    width = max(len(label) for label, _ in values)
    for label, value in values:
        typer.echo(f"{label:>{width}}: {'-' if value is None else value}")


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


def interactive() -> bool:
    """Live views redraw in place on a terminal; piped or in a CI log, they print a plain line per change."""
    return console.is_terminal and err.is_terminal


def follow(c: Client, job_id: str, *, quiet: bool = False, progress_to_stderr: bool = False) -> JobPublic:
    """Until the job ends: a live view on a terminal (one table, changing in place), else a line per change; a
    gateway restart only pauses it (the client retries). Ends with the job's outcome and exit code."""
    if quiet:
        return c.wait(job_id, timeout_s=10**7)
    live = Live(console=err, refresh_per_second=4, transient=False, auto_refresh=False) if interactive() else None
    last = ""
    try:
        if live is not None:
            live.start()
        while True:
            try:
                job = c.job(job_id)
                epochs = len(c.metrics(job_id).epochs) if job.state is not JobState.ACCEPTED else 0
            except ClientError as exc:
                err.print(f"gateway: {exc}", highlight=False, markup=False)
                time.sleep(2)
                continue
            if live is not None:
                caption = f"epochs done: {epochs}" + (f"; {job.health_reason}" if job.health_reason else "")
                live.update(Text(f"{lines.render([job])}\n{caption}"), refresh=True)
            elif (line := lines.change_line(job, epochs)) != last:
                typer.echo(line, err=progress_to_stderr)  # stderr: when stdout is for an answer (rerun --verify)
                last = line
            if job.state.is_terminal:
                break
            time.sleep(1)
    finally:
        if live is not None:
            live.stop()
    typer.echo(f"{job.id} {job.state.value}: exit code {exit_code_for(job)}", err=True)
    return job


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
    """Until every task ended: a live view on a terminal, else a line per change of the counts by state; a
    gateway restart only pauses it (the client retries)."""
    current = c.sweep(sweep_id)
    if quiet or not interactive():
        last = ""
        while True:
            counts = " ".join(f"{k}={v}" for k, v in sorted(current.counts.items()))
            if not quiet and counts != last:
                typer.echo(f"sweep {sweep_id}: {counts}")
                last = counts
            if all(t.state.is_terminal for t in current.tasks):
                return current
            time.sleep(1)
            current = c.sweep(sweep_id)
    with Live(sweep_table(current), console=err, refresh_per_second=2, transient=False) as live:
        while not all(t.state.is_terminal for t in current.tasks):
            time.sleep(1)
            current = c.sweep(sweep_id)
            live.update(sweep_table(current))
    return current
