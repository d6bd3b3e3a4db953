"""Job states: the one enum used everywhere, and the one table that maps Slurm's state strings onto it.

Slurm reports many states (and decorates some, e.g. ``CANCELLED by 0``); the rest of the project only ever sees
:class:`JobState`. The protocol's ``launching`` vs ``running`` split needs the trainer's start marker, which
Slurm knows nothing about, so :func:`from_slurm` takes it as an argument.
"""

from __future__ import annotations

import logging
from enum import StrEnum

log = logging.getLogger(__name__)


class JobState(StrEnum):
    ACCEPTED = "accepted"
    QUEUED = "queued"
    REQUEUED = "requeued"  # an attempt ended (node failure, preemption, time-out, requeue) and Slurm runs it again
    LAUNCHING = "launching"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    # Ended by the gateway's health policy (Slurm shows them CANCELLED): no progress from any rank, a loss gone
    # NaN or past its bound, no improvement for `patience` epochs.
    HUNG = "hung"
    DIVERGED = "diverged"
    STOPPED_EARLY = "stopped_early"
    # Slurm reported a state the table below lacks (a newer Slurm, a rare flag): that job alone shows it, with
    # Slurm's own name in its slurm_state, and is polled again; every other job's tracking goes on.
    UNKNOWN = "unknown"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset(
    {
        JobState.SUCCEEDED,
        JobState.FAILED,
        JobState.CANCELLED,
        JobState.TIMEOUT,
        JobState.HUNG,
        JobState.DIVERGED,
        JobState.STOPPED_EARLY,
    }
)
# Runs that went wrong: what a sweep's retry-failed runs again, and what the failure counts count.
FAILED_STATES = frozenset({JobState.FAILED, JobState.TIMEOUT, JobState.HUNG, JobState.DIVERGED})

# Slurm's base state (sacct/squeue long form) -> ours. RUNNING is resolved by the start marker.
SLURM_STATE_MAP: dict[str, JobState] = {
    "PENDING": JobState.QUEUED,
    "REQUEUED": JobState.REQUEUED,
    "REQUEUE_HOLD": JobState.REQUEUED,
    "REQUEUE_FED": JobState.REQUEUED,
    "RESIZING": JobState.QUEUED,
    "SUSPENDED": JobState.QUEUED,
    "STOPPED": JobState.QUEUED,
    "SIGNALING": JobState.RUNNING,
    "CONFIGURING": JobState.LAUNCHING,
    "POWER_UP_NODE": JobState.LAUNCHING,  # its nodes are booting (power saving): allocated, not started
    "RESV_DEL_HOLD": JobState.QUEUED,  # held because its reservation was deleted
    "RUNNING": JobState.RUNNING,
    "COMPLETING": JobState.RUNNING,
    "STAGE_OUT": JobState.RUNNING,
    "COMPLETED": JobState.SUCCEEDED,
    "FAILED": JobState.FAILED,
    "NODE_FAIL": JobState.FAILED,
    "OUT_OF_MEMORY": JobState.FAILED,
    "BOOT_FAIL": JobState.FAILED,
    "DEADLINE": JobState.FAILED,
    "SPECIAL_EXIT": JobState.FAILED,
    "REVOKED": JobState.FAILED,
    "PREEMPTED": JobState.FAILED,
    "CANCELLED": JobState.CANCELLED,
    "TIMEOUT": JobState.TIMEOUT,
}

# Slurm states after which Slurm may still run the same job id again: a requeue after a node failure, a
# preemption, a time-out that a checkpointing trainer turns into a requeue, `scontrol requeue`. Accounting can
# show such a record as the job's latest for a few seconds before the next attempt's record arrives, so a job
# in one of them stays open until slurmctld says it is over (or has forgotten it).
MAY_RUN_AGAIN = frozenset(
    {"NODE_FAIL", "PREEMPTED", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "BOOT_FAIL", "TIMEOUT", "SPECIAL_EXIT"}
)

# squeue's compact codes, for the fallback when accounting is absent.
SQUEUE_SHORT_CODES: dict[str, str] = {
    "PD": "PENDING",
    "R": "RUNNING",
    "CG": "COMPLETING",
    "CF": "CONFIGURING",
    "CD": "COMPLETED",
    "F": "FAILED",
    "CA": "CANCELLED",
    "TO": "TIMEOUT",
    "NF": "NODE_FAIL",
    "OOM": "OUT_OF_MEMORY",
    "BF": "BOOT_FAIL",
    "DL": "DEADLINE",
    "PR": "PREEMPTED",
    "RQ": "REQUEUED",
    "RH": "REQUEUE_HOLD",
    "RS": "RESIZING",
    "S": "SUSPENDED",
    "ST": "STOPPED",
    "SO": "STAGE_OUT",
    "SE": "SPECIAL_EXIT",
}


_warned: set[str] = set()


def slurm_base_state(raw: str) -> str:
    """``'CANCELLED by 0'`` -> ``'CANCELLED'``; ``'PD'`` -> ``'PENDING'``; ``'RUNNING+'`` -> ``'RUNNING'``."""
    base = raw.strip().split(" ", 1)[0].rstrip("+").upper()
    return SQUEUE_SHORT_CODES.get(base, base)


def from_slurm(raw: str, *, started: bool = True, requeued: bool = False) -> JobState:
    """Map a Slurm state string to a :class:`JobState`.

    ``started`` says whether the trainer's start marker exists; without it a RUNNING job is ``launching``.
    ``requeued`` says an earlier attempt of the job ended and Slurm runs it again: waiting, it is ``requeued``.
    """
    base = slurm_base_state(raw)
    state = SLURM_STATE_MAP.get(base)
    if state is None:
        # Not a guessed mapping and not an error: an exception here would end the poll of every job of every team
        # for as long as this one job exists. Logged once per state, the raw name shown with the job.
        if base not in _warned:
            _warned.add(base)
            log.warning("Slurm state %r is not in launchers.states' table: its jobs show as unknown", raw)
        return JobState.UNKNOWN
    if requeued and state is JobState.QUEUED:
        return JobState.REQUEUED
    if state is JobState.RUNNING and not started:
        return JobState.LAUNCHING
    return state
