"""From what Slurm and the job folder say about one job, to what the gateway records: a pure function.

It reads the stored job and this cycle's evidence and returns the change, without touching the database, the
files or Slurm, so that every rule here is tested on captured Slurm output alone (tests/worker/).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from gateway.worker.observe import JobObservation
from launchers.slurm.squeue import PendingInfo
from launchers.states import JobState, from_slurm

# The phases a poll can miss between two cycles; their evidence still says they happened.
PROGRESSION = (JobState.QUEUED, JobState.LAUNCHING, JobState.RUNNING)


class StoredJob(Protocol):
    """What :func:`decide` reads of a job row."""

    state: str
    slurm_state: str | None
    reason: str | None
    position_in_queue: int | None
    restarts: int
    start_time: datetime | None


@dataclass(frozen=True)
class Evidence:
    """Everything known about one job in one cycle."""

    seen: JobObservation | None  # sacct's (or scontrol's) row; None: not in accounting yet
    pending: PendingInfo | None = None  # squeue's reason and position while it waits
    started: dict[str, Any] | None = None  # the trainer's start marker (every rank initialised)
    first_failure: tuple[int, int] | None = None  # (rank, exit code) of the first rank that failed


@dataclass
class Transition:
    """What to write: field values, then the history entries (state, Slurm state, reason), in order."""

    fields: dict[str, Any] = field(default_factory=dict)
    history: list[tuple[JobState, str | None, str | None]] = field(default_factory=list)
    read_metrics: bool = False

    @property
    def state(self) -> JobState | None:
        return self.history[-1][0] if self.history else None


def decide(job: StoredJob, ev: Evidence, now: datetime) -> Transition:
    """The change one cycle's evidence makes to ``job`` (empty when nothing is known yet)."""
    seen, pending = ev.seen, ev.pending
    if seen is None:
        if pending is None:  # neither in accounting nor pending: wait for the next cycle
            return Transition()
        return Transition(fields={"reason": pending.reason, "position_in_queue": pending.position})
    state = from_slurm(seen.slurm_state, started=ev.started is not None)
    if state.is_terminal and not seen.settled:
        return Transition()  # accounting is still filling the record in; look again next cycle
    fields: dict[str, Any] = {
        "slurm_state": seen.slurm_state,
        "restarts": int(ev.started["restart"]) if ev.started else job.restarts,
        "start_time": seen.start or job.start_time,
    }
    if state is JobState.QUEUED:
        fields["reason"] = pending.reason if pending else seen.reason
        fields["position_in_queue"] = pending.position if pending else None
    else:
        fields["position_in_queue"] = None
        fields["reason"] = seen.reason if state.is_terminal else None
    if state.is_terminal:
        fields["exit_code"] = ev.first_failure[1] if ev.first_failure else seen.exit_code
        fields["end_time"] = seen.end or now
    transition = Transition(fields=fields, read_metrics=state is JobState.RUNNING or state.is_terminal)
    current = JobState(job.state)
    if current in PROGRESSION and state not in (JobState.QUEUED, JobState.CANCELLED):
        evidence = {JobState.LAUNCHING: seen.start is not None, JobState.RUNNING: ev.started is not None}
        for step in PROGRESSION[PROGRESSION.index(current) + 1 :]:
            if step is state or not evidence[step]:
                break
            transition.history.append((step, "RUNNING", None))
    if state is not current or transition.history:
        transition.history.append((state, seen.slurm_state, fields["reason"]))
    return transition
