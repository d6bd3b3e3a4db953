import pytest

from launchers.states import SLURM_STATE_MAP, TERMINAL_STATES, JobState, from_slurm


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


def test_a_state_the_table_lacks_is_unknown_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="launchers.states"):
        assert from_slurm("BOGUS_NEW_STATE") is JobState.UNKNOWN
        assert from_slurm("BOGUS_NEW_STATE", started=False, requeued=True) is JobState.UNKNOWN
    assert [r.getMessage() for r in caplog.records].count(
        "Slurm state 'BOGUS_NEW_STATE' is not in launchers.states' table: its jobs show as unknown"
    ) == 1
    assert not JobState.UNKNOWN.is_terminal


def test_terminal_states() -> None:
    assert {s for s in JobState if s.is_terminal} == TERMINAL_STATES
    assert not JobState.ACCEPTED.is_terminal
    assert set(SLURM_STATE_MAP.values()) - {JobState.LAUNCHING} <= set(JobState)
