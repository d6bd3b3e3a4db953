"""What the worker reads from Slurm in one cycle: one ``sacct -D`` call for every active job (chunked), at most
one squeue for pending reasons and queue positions, and, only in cycles that need it, one ``squeue --json``
(is a job in a state Slurm may come back from really over?) and one sinfo (which node failed?).

A Slurm record counts as ours only when it is the job's Unix user's, in the job's account, with the comment the
gateway gave it (when accounting has stored it) and a submit time no earlier than the gateway's own sbatch: after
a controller state reset, ids are reused, and comments are anyone's to set. Records come from output no user can
forge (sacct with a delimiter made for the call, squeue's JSON), and a record that does not read is skipped, never
the cycle. Nothing here ever concludes that a job failed because a command failed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from launchers.slurm import commands
from launchers.slurm.hostlist import expand_hostlist
from launchers.slurm.ids import master_id, wanted_ids
from launchers.slurm.sacct import SacctRow
from launchers.slurm.shell import CommandError
from launchers.slurm.squeue import HeldJob, PendingInfo
from launchers.states import MAY_RUN_AGAIN, from_slurm, slurm_base_state

log = logging.getLogger(__name__)
SUBMIT_SLACK = timedelta(minutes=5)  # clock skew between the gateway and slurmctld that is still "the same job"
WINDING_DOWN = frozenset({"COMPLETING", "STAGE_OUT", "SIGNALING"})
NODE_DOWN_STATES = frozenset({"down", "drained", "draining", "drain", "fail", "failing", "unknown"})


@dataclass(frozen=True)
class Identity:
    """How the worker recognises its own Slurm job behind an id."""

    comment: str | None
    submitted: datetime | None  # when the gateway accepted the job: before its sbatch
    user: str | None = None  # the Unix user it was submitted as (None: not checked)
    account: str | None = None  # the Slurm account it was submitted under (None: not checked)


@dataclass(frozen=True)
class Attempt:
    """One run of a job: Slurm runs the same id again after a requeue, and ``sacct -D`` keeps each run's row."""

    slurm_state: str
    node_list: str
    start: datetime | None
    end: datetime | None
    reason: str | None = None


@dataclass
class JobObservation:
    """Slurm's word on one job in this cycle."""

    slurm_state: str
    exit_code: int | None = None
    reason: str | None = None
    submit: datetime | None = None
    start: datetime | None = None
    end: datetime | None = None
    settled: bool = True  # False: not final yet (accounting filling the record in, or Slurm may run it again)
    exit_signal: int = 0
    node_list: str = ""
    restarts: int = 0
    attempts: list[Attempt] = field(default_factory=list)  # every run so far, the current one last
    previous: Attempt | None = None  # the run that ended in a state Slurm came back from: why it was requeued
    failed_nodes: list[str] = field(default_factory=list)  # nodes of the failed run that Slurm has marked down


@dataclass
class Observations:
    jobs: dict[str, JobObservation] = field(default_factory=dict)
    pending: dict[str, PendingInfo] = field(default_factory=dict)
    commands: int = 0
    accounting_ok: bool = True
    source: str = "sacct"
    error: str | None = None
    known_to_controller: set[str] | None = None  # ids slurmctld holds, when this cycle asked (None: did not ask)


def is_ours(
    identity: Identity | None, comment: str, submit: datetime | None, user: str = "", account: str = ""
) -> bool:
    """Whose a record is: user and account must match exactly (Slurm keeps accounts in lower case), the comment
    when both sides have one, else the submit time."""
    if identity is None:
        return True
    if identity.user is not None and user != identity.user:
        return False
    if identity.account is not None and account.lower() != identity.account.lower():
        return False
    if identity.comment and comment:
        return comment == identity.comment
    if identity.submitted is not None and submit is not None:
        return submit >= identity.submitted - SUBMIT_SLACK
    return True


def observe(
    wanted: Mapping[str, Identity],
    *,
    want_pending: bool,
    chunk: int = 500,
    confirm_missing: set[str] | None = None,
) -> Observations:
    """``confirm_missing``: ids the caller would declare lost if slurmctld does not hold them either."""
    obs = Observations()
    if wanted:
        try:
            obs.jobs = _from_accounting(wanted, chunk, obs)
        except CommandError as exc:
            obs.accounting_ok, obs.error = False, _first_line(exc)
            log.warning("sacct failed (%s); falling back to slurmctld (squeue)", obs.error)
            obs.jobs, obs.source = {}, "scontrol"
            _from_controller_only(wanted, obs)
        else:
            again = {i for i, o in obs.jobs.items() if o.slurm_state in MAY_RUN_AGAIN}
            if again or confirm_missing:
                _confirm_with_controller(wanted, again, obs)
            _name_failed_nodes(obs)
    if want_pending:
        try:
            obs.commands += 1
            obs.pending = commands.pending()
        except CommandError as exc:
            log.warning("squeue failed: %s", _first_line(exc))
    return obs


def _from_accounting(wanted: Mapping[str, Identity], chunk: int, obs: Observations) -> dict[str, JobObservation]:
    # An array's id covers all its elements: a 1,000-task sweep is one id on sacct's command line.
    query = sorted({master_id(j) for j in wanted}, key=lambda j: (len(j), j))
    obs.commands += -(-len(query) // chunk)
    runs: dict[str, list[SacctRow]] = {}
    in_range: dict[str, SacctRow] = {}
    for row in commands.sacct(query, chunk=chunk, attempts=True):
        for job_id in _ids_of(row.job_id, wanted):
            if is_ours(wanted[job_id], row.comment, row.submit, row.user, row.account):
                if row.job_id == job_id:
                    runs.setdefault(job_id, []).append(row)
                else:
                    in_range[job_id] = row
    # An array's pending range (``523_[1-2]``) is no run: an element in it has not started. slurmdbd updates the
    # range's task list later than it records an element's own start, so an element that started can be in both
    # for a while; its own rows are then the truth, and only an element without any is read from the range.
    for job_id, row in in_range.items():
        runs.setdefault(job_id, [row])
    return {job_id: from_runs(rows) for job_id, rows in runs.items()}


def from_runs(rows: list[SacctRow]) -> JobObservation:
    """A job's ``sacct -D`` rows, oldest first: the last is the current run."""
    current = rows[-1]
    attempts = [Attempt(slurm_base_state(r.slurm_state), r.node_list, r.start, r.end, _reason(r.reason)) for r in rows]
    previous = attempts[-2] if len(attempts) > 1 and attempts[-2].slurm_state in MAY_RUN_AGAIN else None
    return JobObservation(
        slurm_state=slurm_base_state(current.slurm_state),
        exit_code=current.exit_code,
        exit_signal=current.exit_signal,
        reason=_reason(current.reason),
        submit=current.submit,
        start=current.start,
        end=current.end,
        settled=current.settled if current.state.is_terminal else True,
        node_list=current.node_list,
        restarts=len(rows) - 1,
        attempts=attempts,
        previous=previous,
    )


def from_sacct(row: SacctRow) -> JobObservation:
    return from_runs([row])


def from_held(record: HeldJob) -> JobObservation:
    """slurmctld's record (``squeue --json``)."""
    return JobObservation(
        slurm_state=slurm_base_state(record.state or "UNKNOWN"),
        exit_code=record.exit_code,
        exit_signal=record.exit_signal,
        reason=_reason(record.reason),
        submit=record.submit,
        start=record.start,
        end=record.end,
        node_list=record.node_list if record.node_list != "(null)" else "",
        restarts=record.restarts,
    )


def _ids_of(printed: str, wanted: Mapping[str, Identity]) -> list[str]:
    """The wanted ids a printed id stands for (a range is intersected, never expanded); none for one that
    does not read."""
    try:
        return wanted_ids(printed, wanted.keys())
    except ValueError:
        log.warning("skipping a Slurm record with an unreadable id %r", printed[:80])
        return []


def _controller(wanted: Mapping[str, Identity], obs: Observations) -> dict[str, JobObservation] | None:
    """slurmctld's record of every job it holds that is one of ours; None when it does not answer."""
    try:
        obs.commands += 1
        records = commands.held_jobs()
    except CommandError as exc:
        obs.error = f"{obs.error + '; ' if obs.error else ''}squeue failed: {_first_line(exc)}"
        return None
    held: dict[str, JobObservation] = {}
    for record in records:
        for one in _ids_of(record.job_id, wanted):
            if is_ours(wanted[one], record.comment, record.submit, record.user, record.account):
                held[one] = from_held(record)
    obs.known_to_controller = set(held)
    return held


def _from_controller_only(wanted: Mapping[str, Identity], obs: Observations) -> None:
    held = _controller(wanted, obs)
    if held is None:
        obs.source = "none"
        return
    for job_id, observation in held.items():
        obs.jobs[job_id] = observation  # slurmctld's own word: a state it holds is not waiting for accounting


def _confirm_with_controller(wanted: Mapping[str, Identity], again: set[str], obs: Observations) -> None:
    """Accounting's latest row is a state Slurm may come back from: slurmctld says whether it did."""
    held = _controller(wanted, obs)
    for job_id in again:
        seen = obs.jobs[job_id]
        if held is None:
            seen.settled = False  # cannot tell; look again next cycle
            continue
        live = held.get(job_id)
        if live is None or from_slurm(live.slurm_state).is_terminal:
            if live is not None:
                seen.restarts = max(seen.restarts, live.restarts)
            continue  # slurmctld forgot it, or holds it ended: the row is final
        ended = seen.attempts[-1] if seen.attempts else Attempt(seen.slurm_state, seen.node_list, seen.start, seen.end)
        if live.slurm_state in WINDING_DOWN or (live.start and ended.start and live.start <= ended.start):
            seen.settled = False  # slurmctld is still ending that run (requeue or not is decided after): wait
            continue
        live.attempts = [*seen.attempts, Attempt(live.slurm_state, live.node_list, live.start, None, live.reason)]
        live.previous = ended
        live.restarts = max(live.restarts, seen.restarts + 1)
        obs.jobs[job_id] = live


def _name_failed_nodes(obs: Observations) -> None:
    """For a run that ended in NODE_FAIL: which of its nodes Slurm has marked down (one sinfo, when needed)."""
    failed = {
        job_id: attempt
        for job_id, seen in obs.jobs.items()
        for attempt in (seen.previous, seen.attempts[-1] if seen.attempts else None)
        if attempt is not None and attempt.slurm_state == "NODE_FAIL"
    }
    if not failed:
        return
    try:
        obs.commands += 1
        down = {row.node for row in commands.sinfo() if row.state in NODE_DOWN_STATES}
    except CommandError as exc:
        log.warning("sinfo failed: %s", _first_line(exc))
        return
    for job_id, attempt in failed.items():
        try:
            nodes = expand_hostlist(attempt.node_list)
        except ValueError:
            continue
        obs.jobs[job_id].failed_nodes = [n for n in nodes if n in down]


def _reason(text: str | None) -> str | None:
    return None if text in (None, "", "None") else text


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0]
