import pytest

from launchers.states import SLURM_STATE_MAP, TERMINAL_STATES, JobState, UnknownSlurmStateError, from_slurm


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("PENDING", JobState.QUEUED),
        ("PD", JobState.QUEUED),
        ("REQUEUED", JobState.REQUEUED),
        ("COMPLETED", JobState.SUCCEEDED),
        ("FAILED", JobState.FAILED),
        ("OUT_OF_MEMORY", JobState.FAILED),
        ("NODE_FAIL", JobState.FAILED),
        ("CANCELLED by 0", JobState.CANCELLED),
        ("TIMEOUT", JobState.TIMEOUT),
        ("RUNNING", JobState.RUNNING),
        ("COMPLETING", JobState.RUNNING),
        ("CONFIGURING", JobState.LAUNCHING),
    ],
)
def test_slurm_states_map_onto_the_protocol(raw: str, expected: JobState) -> None:
    assert from_slurm(raw) is expected


def test_running_without_start_marker_is_launching() -> None:
    assert from_slurm("RUNNING", started=False) is JobState.LAUNCHING
    assert from_slurm("RUNNING", started=True) is JobState.RUNNING


def test_preempted_depends_on_requeue() -> None:
    assert from_slurm("PREEMPTED") is JobState.FAILED
    assert from_slurm("PENDING", requeued=True) is JobState.REQUEUED  # an earlier attempt ended; Slurm runs it again
    assert from_slurm("REQUEUED") is JobState.REQUEUED


def test_unknown_state_is_loud() -> None:
    with pytest.raises(UnknownSlurmStateError, match="BOGUS"):
        from_slurm("BOGUS")


def test_terminal_states() -> None:
    assert {s for s in JobState if s.is_terminal} == TERMINAL_STATES
    assert not JobState.ACCEPTED.is_terminal
    assert set(SLURM_STATE_MAP.values()) - {JobState.LAUNCHING} <= set(JobState)
