"""``decide()`` as the pure function it is, on observations built from sacct text captured on the local cluster
(tests/data/sacct_3jobs_with_steps.txt, tests/data/requeue/)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from gateway.worker.apply import Evidence, Transition, decide
from gateway.worker.observe import JobObservation, from_runs, from_sacct
from launchers.slurm.sacct import DELIMITER, FIELDS, parse_sacct
from launchers.slurm.squeue import PendingInfo
from launchers.states import JobState

DATA = Path(__file__).resolve().parents[1] / "data"
CAPTURED = (DATA / "sacct_3jobs_with_steps.txt").read_text()
NOW = datetime(2026, 11, 23, 17, 0, tzinfo=UTC)
CAPTURED_FIELDS = tuple(f for f in FIELDS[:-1] if f != "User")  # captured before Comment and User were asked for
REQUEUE_FIELDS = tuple(f for f in FIELDS if f != "User")
STARTED = {"size": 2, "restart": 0, "time": 0.0}


def line_of(job_id: str, text: str = CAPTURED) -> str:
    return next(line for line in text.splitlines() if line.split(DELIMITER, 1)[0] == job_id)


def seen(job_id: str, **changes: str) -> JobObservation:
    """The captured row of ``job_id`` (not its steps), with some fields replaced."""
    parts = dict(zip(CAPTURED_FIELDS, line_of(job_id).split(DELIMITER), strict=True))
    parts.update(changes)
    (row,) = parse_sacct(DELIMITER.join(parts[f] for f in CAPTURED_FIELDS), CAPTURED_FIELDS)
    return from_sacct(row)


def runs(name: str) -> JobObservation:
    return from_runs(parse_sacct((DATA / "requeue" / f"{name}.sacct").read_text(), REQUEUE_FIELDS))


def stored(state: str = "queued", restarts: int = 0, time_limit_min: int = 60, **extra: object) -> SimpleNamespace:
    values: dict[str, object] = {
        "state": state,
        "slurm_job_id": "3",
        "slurm_state": "PENDING",
        "reason": None,
        "position_in_queue": None,
        "restarts": restarts,
        "start_time": None,
        "time_limit_min": time_limit_min,
    }
    return SimpleNamespace(**(values | extra))


def states(transition: Transition) -> list[JobState]:
    return [state for state, _, _ in transition.history]


def test_the_captured_text_is_three_jobs_and_their_steps() -> None:
    assert parse_sacct(CAPTURED) == []  # the wrong field count is skipped, never misread
    rows = parse_sacct(CAPTURED, CAPTURED_FIELDS)
    assert [r.job_id for r in rows if not r.is_step] == ["3", "4", "5"]
    assert [r.settled for r in rows if not r.is_step] == [True, True, True]


def test_a_completed_job_with_its_start_marker_went_through_every_phase() -> None:
    observation = seen("3")
    transition = decide(stored(), Evidence(seen=observation, started=STARTED), NOW)
    assert transition.history == [
        (JobState.LAUNCHING, "RUNNING", None),
        (JobState.RUNNING, "RUNNING", None),
        (JobState.SUCCEEDED, "COMPLETED", None),
    ]
    fields = transition.fields
    assert (fields["exit_code"], fields["reason"], fields["slurm_state"]) == (0, None, "COMPLETED")
    assert fields["start_time"] == observation.start and fields["end_time"] == observation.end
    assert transition.read_metrics


def test_without_the_start_marker_the_trainer_never_ran() -> None:
    assert states(decide(stored(), Evidence(seen=seen("3")), NOW)) == [JobState.LAUNCHING, JobState.SUCCEEDED]


def test_a_job_already_running_adds_only_its_end() -> None:
    transition = decide(stored("running"), Evidence(seen=seen("3"), started=STARTED), NOW)
    assert states(transition) == [JobState.SUCCEEDED]


def test_a_job_script_exit_code() -> None:
    transition = decide(stored("running"), Evidence(seen=seen("4")), NOW)
    assert transition.history == [(JobState.FAILED, "FAILED", "the job script exited with code 3")]
    assert transition.fields["exit_code"] == 3


def test_the_first_failing_rank_wins_over_the_job_scripts_code() -> None:
    transition = decide(stored("running"), Evidence(seen=seen("4"), started=STARTED, first_failure=(1, 7)), NOW)
    assert transition.fields["exit_code"] == 7
    assert transition.fields["reason"] == "the trainer exited with code 7 on rank 1"


def test_cancelled_while_pending_records_no_phase_it_never_had() -> None:
    observation = seen("5")  # "CANCELLED by 0", never started, held by its user
    assert observation.slurm_state == "CANCELLED" and observation.start is None
    transition = decide(stored(), Evidence(seen=observation), NOW)
    assert transition.history == [(JobState.CANCELLED, "CANCELLED", "JobHeldUser")]
    assert transition.fields["start_time"] is None and transition.fields["end_time"] == observation.end


@pytest.mark.parametrize(("field", "value"), [("End", "Unknown"), ("Partition", "")])
def test_an_end_state_accounting_is_still_filling_in_is_not_applied(field: str, value: str) -> None:
    observation = seen("3", **{field: value})
    assert observation.slurm_state == "COMPLETED" and not observation.settled
    transition = decide(stored("running"), Evidence(seen=observation, started=STARTED), NOW)
    assert transition.fields == {} and transition.history == []


def test_an_end_state_already_recorded_adds_no_history() -> None:
    transition = decide(stored("succeeded"), Evidence(seen=seen("3"), started=STARTED), NOW)
    assert transition.history == [] and transition.state is None


@pytest.mark.parametrize(
    ("slurm_state", "state", "reason"),
    [
        ("TIMEOUT", JobState.TIMEOUT, "reached its time limit of 10 min"),
        ("OUT_OF_MEMORY", JobState.FAILED, "out of memory: a rank exceeded the job's memory limit"),
        ("NODE_FAIL", JobState.FAILED, "a node of n1 failed; Slurm did not requeue the job"),
        ("PREEMPTED", JobState.FAILED, "preempted; Slurm did not requeue the job"),
        ("CANCELLED by 1000", JobState.CANCELLED, "cancelled"),
    ],
)
def test_end_states_and_their_reasons(slurm_state: str, state: JobState, reason: str) -> None:
    observation = seen("4", State=slurm_state, ExitCode="0:0", Reason="None")
    transition = decide(stored("running", time_limit_min=10), Evidence(seen=observation), NOW)
    assert transition.history[-1] == (state, observation.slurm_state, reason)


def test_running_from_captured_text_is_launching_until_the_marker() -> None:
    observation = runs("nf-running")
    assert states(decide(stored(), Evidence(seen=observation), NOW)) == [JobState.LAUNCHING]
    assert states(decide(stored(), Evidence(seen=observation, started=STARTED), NOW)) == [
        JobState.LAUNCHING,
        JobState.RUNNING,
    ]
    assert states(decide(stored("launching"), Evidence(seen=observation, started=STARTED), NOW)) == [JobState.RUNNING]
    assert decide(stored("running"), Evidence(seen=observation, started=STARTED), NOW).history == []


def test_a_start_marker_from_an_earlier_run_does_not_count() -> None:
    observation = runs("nf-rerun")  # NODE_FAIL, then running again
    assert observation.restarts == 1
    stale = decide(stored("requeued", restarts=1), Evidence(seen=observation, started=STARTED), NOW)
    assert states(stale) == [JobState.LAUNCHING]
    fresh = {**STARTED, "restart": 1}
    again = decide(stored("requeued", restarts=1), Evidence(seen=observation, started=fresh), NOW)
    assert states(again) == [JobState.LAUNCHING, JobState.RUNNING]


def test_a_requeued_job_waits_with_its_reason() -> None:
    transition = decide(stored("running"), Evidence(seen=runs("rq-pending")), NOW)
    reason = (
        "requeued (scontrol requeue, or the trainer's checkpoint before its time limit); requeued by Slurm (restart 1)"
    )
    assert transition.history == [(JobState.REQUEUED, "PENDING", reason)]
    assert transition.fields["restarts"] == 1


def test_pending_reason_and_position_only_from_squeue() -> None:
    transition = decide(stored(), Evidence(seen=None, pending=PendingInfo("Priority", "team-a", 3)), NOW)
    assert transition.fields == {"reason": "Priority", "position_in_queue": 3} and transition.history == []


def test_pending_in_accounting_and_squeue() -> None:
    observation = seen("3", State="PENDING", Start="Unknown", End="Unknown", Reason="Priority")
    transition = decide(stored(), Evidence(seen=observation, pending=PendingInfo("Resources", "team-a", 2)), NOW)
    assert transition.history == []
    assert (transition.fields["reason"], transition.fields["position_in_queue"]) == ("Resources", 2)


def test_nothing_known_changes_nothing() -> None:
    transition = decide(stored(), Evidence(seen=None), NOW)
    assert transition.fields == {} and transition.history == []


def test_lost_after_the_grace() -> None:
    transition = decide(stored(), Evidence(seen=None, lost_after_s=700.0), NOW)
    assert states(transition) == [JobState.FAILED]
    assert transition.fields["reason"].startswith("lost: neither accounting nor slurmctld")
    assert "700 s" in transition.fields["reason"] and transition.fields["end_time"] == NOW
