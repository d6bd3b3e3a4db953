"""From what Slurm and the job folder say about one job, to what the gateway records: a pure function.

It reads the stored job and this cycle's evidence and returns the change, without touching the database, the
files or Slurm, so that every rule here is tested on captured Slurm output alone (tests/worker/).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from gateway.worker.observe import JobObservation
from gateway.worker.reasons import lost_reason, requeue_reason, terminal_reason
from launchers.slurm.squeue import PendingInfo
from launchers.states import JobState, from_slurm

# The phases a poll can miss between two cycles; their evidence still says they happened.
PROGRESSION = (JobState.QUEUED, JobState.LAUNCHING, JobState.RUNNING)


class StoredJob(Protocol):
    """What :func:`decide` reads of a job row."""

    state: JobState
    slurm_job_id: str | None
    slurm_state: str | None
    reason: str | None
    position_in_queue: int | None
    restarts: int
    start_time: datetime | None
    time_limit_min: int


@dataclass(frozen=True)
class Evidence:
    """Everything known about one job in one cycle."""

    seen: JobObservation | None  # sacct's (or scontrol's) view; None: not in accounting yet
    pending: PendingInfo | None = None  # squeue's reason and position while it waits
    started: dict[str, Any] | None = None  # the trainer's start marker (every rank initialised)
    first_failure: tuple[int, int] | None = None  # (rank, exit code) of the first rank that failed
    verdict: tuple[JobState, str] | None = None  # the health policy stopped it: its cancellation ends as this
    # The worker's memory, which no Slurm command can give back: the rules below decide what it means.
    vanishing: bool = False  # a pending array element the gateway scancel'd (see cancelled_while_waiting)
    ever_seen: bool = False  # the worker has seen the job in accounting or the queue, this cycle or before
    # What the lost rule (see _forgotten) weighs besides ``seen`` and ``pending``; the defaults: no one has it.
    lost_after_s: float | None = None  # seconds since its sbatch, once past the grace (poll.lost_after_s)
    accounting_ok: bool = True  # sacct answered this cycle: its silence says something
    controller_holds: bool = False  # slurmctld holds the job, or was not asked (it is, of overdue jobs never seen)


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
        if ev.vanishing and pending is None:
            return cancelled_while_waiting(job.slurm_state, now)
        if pending is None and ev.lost_after_s is not None and _forgotten(ev):
            return _lost(job, ev.lost_after_s, now)
        if pending is None:  # neither in accounting nor pending: wait for the next cycle
            return Transition()
        return Transition(fields={"reason": pending.reason, "position_in_queue": pending.position})
    restarts = max(seen.restarts, job.restarts)
    # The start marker of an earlier run does not say that this run started.
    started = ev.started if ev.started is not None and _restart(ev.started) >= restarts else None
    requeued = seen.previous is not None or seen.restarts > 0
    state = from_slurm(seen.slurm_state, started=started is not None, requeued=requeued)
    if state is JobState.CANCELLED and ev.verdict is not None:
        state = ev.verdict[0]  # the cancellation was the policy's: hung, diverged, stopped_early
    if not seen.settled:
        # Accounting is filling the record in, or slurmctld is still ending a run it may start again (a REQUEUED
        # row while the job is COMPLETING): what it decides is known next cycle, with the run that ended.
        return Transition()
    fields: dict[str, Any] = {
        "slurm_state": seen.slurm_state,
        "restarts": restarts,
        "start_time": seen.start or job.start_time,
        "position_in_queue": pending.position if pending and state in (JobState.QUEUED, JobState.REQUEUED) else None,
    }
    if state is JobState.REQUEUED:
        fields["reason"] = _requeue_reason(job, seen, restarts)
    elif state is JobState.QUEUED:
        fields["reason"] = pending.reason if pending else seen.reason
    elif state is JobState.UNKNOWN:
        raw = seen.slurm_state[:64]
        fields["reason"] = f"Slurm reports state {raw}, which this gateway does not know: polled again"
    elif state.is_terminal:
        verdict = ev.verdict[1] if ev.verdict is not None and state is ev.verdict[0] else None
        reason = verdict[:256] if verdict else None  # the column's bound: a policy's reason can be long
        fields["reason"] = reason or terminal_reason(state, seen, ev.first_failure, job.time_limit_min)
        fields["exit_code"] = ev.first_failure[1] if ev.first_failure else seen.exit_code
        fields["end_time"] = seen.end or now
    else:
        fields["reason"] = None
    transition = Transition(fields=fields, read_metrics=state is JobState.RUNNING or state.is_terminal)
    current = JobState(job.state)  # a stored row or a value built in a test: the enum either way
    if current is JobState.REQUEUED and state is not JobState.REQUEUED:
        current = JobState.QUEUED  # a requeued job goes through the phases again
    if current in PROGRESSION and state not in (JobState.QUEUED, JobState.REQUEUED, JobState.CANCELLED):
        evidence = {JobState.LAUNCHING: seen.start is not None, JobState.RUNNING: started is not None}
        for step in PROGRESSION[PROGRESSION.index(current) + 1 :]:
            if step is state or not evidence[step]:
                break
            transition.history.append((step, "RUNNING", None))
    if state != job.state or transition.history:
        transition.history.append((state, seen.slurm_state, fields["reason"]))
    return transition


def _restart(started: dict[str, Any]) -> int:
    """The run a start marker names; -1 (no run of this job) when it names none: the marker is the job's user's
    to write, and a ``{"restart": "x"}`` says nothing, rather than failing the decision."""
    restart = started.get("restart", 0)
    return restart if isinstance(restart, int) and not isinstance(restart, bool) else -1


def _requeue_reason(job: StoredJob, seen: JobObservation, restarts: int) -> str:
    """Named once, when the failed node is known; kept while the job waits (the node may be back by then)."""
    if job.state == JobState.REQUEUED and job.reason and not seen.failed_nodes:
        return job.reason
    return requeue_reason(seen.previous, seen.failed_nodes, restarts, held=seen.slurm_state == "REQUEUE_HOLD")


def _forgotten(ev: Evidence) -> bool:
    """A job past the grace that nothing lists (``seen`` and ``pending`` are None): sacct answered without it,
    slurmctld was asked and does not hold it, and the worker never saw it. A job once seen ended with a record,
    or is still somewhere: an empty answer about it is Slurm's trouble, never a verdict on the job."""
    return ev.accounting_ok and not ev.controller_holds and not ev.ever_seen


def _lost(job: StoredJob, waited_s: float, now: datetime) -> Transition:
    reason = lost_reason(job.slurm_job_id or "?", waited_s)
    fields: dict[str, Any] = {"reason": reason, "end_time": now, "position_in_queue": None}
    return Transition(fields=fields, history=[(JobState.FAILED, job.slurm_state, reason)])


def cancelled_while_waiting(slurm_state: str | None, now: datetime) -> Transition:
    """A pending array element cancelled on its own leaves no trace: Slurm 22.05 drops it from the array's
    pending record and writes no accounting record of it (``sacct -j A_i`` is empty, scontrol "not found").
    Once the element we scancel'd is in neither sacct nor squeue, the cancellation is all there is to know."""
    reason = "cancelled while waiting in Slurm (Slurm keeps no record of a pending array element cancelled alone)"
    fields: dict[str, Any] = {"reason": reason[:256], "end_time": now, "position_in_queue": None}
    fields["slurm_state"] = "CANCELLED"
    return Transition(fields=fields, history=[(JobState.CANCELLED, slurm_state, reason[:256])])
