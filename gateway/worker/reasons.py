"""Reasons a user can act on, for every way a job ends or is run again: the failed node, the signal, the time
limit, the trainer's exit code and rank. Written from the evidence a cycle already holds."""

from __future__ import annotations

import signal

from gateway.worker.observe import Attempt, JobObservation
from launchers.states import JobState

_WHY_AGAIN = {
    "PREEMPTED": "preempted",
    "REQUEUED": "requeued (scontrol requeue, or the trainer's checkpoint before its time limit)",
    "REQUEUE_HOLD": "requeued and held",
    "REQUEUE_FED": "requeued by the federation",
    "BOOT_FAIL": "its nodes failed to boot",
    "TIMEOUT": "reached its time limit",
    "SPECIAL_EXIT": "ended with a special exit code",
}


def node_failure(attempt: Attempt, failed_nodes: list[str]) -> str:
    if failed_nodes:
        return f"node{'s' if len(failed_nodes) > 1 else ''} {','.join(failed_nodes)} failed"
    return f"a node of {attempt.node_list or 'its allocation'} failed"


def requeue_reason(previous: Attempt | None, failed_nodes: list[str], restarts: int, held: bool) -> str:
    """Why a job is waiting to run again: ``node n2 failed; requeued by Slurm (restart 1)``."""
    if previous is None:
        what = "an earlier run ended"
    elif previous.slurm_state == "NODE_FAIL":
        what = node_failure(previous, failed_nodes)
    else:
        what = _WHY_AGAIN.get(previous.slurm_state, previous.slurm_state.lower())
    tail = "; held until released (scontrol release)" if held else ""
    return f"{what}; requeued by Slurm (restart {restarts}){tail}"


def terminal_reason(
    state: JobState, seen: JobObservation, first_failure: tuple[int, int] | None, time_limit_min: int
) -> str | None:
    """Why a job ended as it did; None for a success."""
    base = seen.slurm_state
    if state is JobState.SUCCEEDED:
        return None
    if state is JobState.TIMEOUT:
        return f"reached its time limit of {time_limit_min} min"
    if state is JobState.CANCELLED:
        return seen.reason if seen.reason and seen.reason != "None" else "cancelled"
    if base == "NODE_FAIL":
        attempt = seen.attempts[-1] if seen.attempts else Attempt(base, seen.node_list, seen.start, seen.end)
        return f"{node_failure(attempt, seen.failed_nodes)}; Slurm did not requeue the job"
    if base == "PREEMPTED":
        return "preempted; Slurm did not requeue the job"
    if base == "OUT_OF_MEMORY":
        return "out of memory: a rank exceeded the job's memory limit"
    if base == "BOOT_FAIL":
        return "its nodes failed to boot"
    if base == "DEADLINE":
        return "reached its deadline before it could run"
    if first_failure is not None:
        rank, code = first_failure
        return f"the trainer exited with code {code} on rank {rank}"
    if seen.exit_signal:
        return f"killed by signal {seen.exit_signal} ({_signal_name(seen.exit_signal)})"
    if seen.exit_code:
        return f"the job script exited with code {seen.exit_code}"
    return seen.reason or base.lower()


def lost_reason(slurm_job_id: str, waited_s: float) -> str:
    return (
        f"lost: neither accounting nor slurmctld has a record of Slurm job {slurm_job_id} "
        f"{waited_s:.0f} s after it was submitted"
    )


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return "unknown signal"
