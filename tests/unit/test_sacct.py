from datetime import datetime
from pathlib import Path

import pytest

from launchers.sacct import DELIMITER, FIELDS, parse_sacct, sacct_argv
from launchers.states import JobState

CAPTURED = Path(__file__).parent.parent / "data" / "sacct_3jobs_with_steps.txt"


def test_parse_captured_sacct_rows() -> None:
    """Rows captured from the local cluster: a 2-node allreduce, an `exit 3`, and a cancelled held job."""
    rows = {r.job_id: r for r in parse_sacct(CAPTURED.read_text())}
    assert set(rows) == {"3", "3.batch", "3.0", "4", "4.batch", "5"}
    done = rows["3"]
    assert (done.state, done.exit_code, done.partition, done.nodes, done.node_list) == (
        JobState.SUCCEEDED,
        0,
        "team-a",
        2,
        "n[1-2]",
    )
    assert done.start == datetime(2026, 11, 23, 2, 29, 33)
    assert rows["3.0"].is_step and not done.is_step
    failed = rows["4"]
    assert (failed.state, failed.exit_code) == (JobState.FAILED, 3)
    cancelled = rows["5"]
    assert cancelled.state is JobState.CANCELLED
    assert cancelled.name == "we|ird name"  # the pipe in a user's job name does not split the row
    assert cancelled.start is None and cancelled.reason == "JobHeldUser"


def test_wrong_field_count_is_an_error() -> None:
    with pytest.raises(ValueError, match="fields"):
        parse_sacct(DELIMITER.join(["1", "COMPLETED"]))


def test_sacct_argv_is_one_call_for_many_jobs() -> None:
    argv = sacct_argv(["1", "2", "3_4"])
    assert argv[:2] == ["sacct", "-X"]
    assert argv[argv.index("-j") + 1] == "1,2,3_4"
    assert argv[argv.index("-o") + 1] == ",".join(FIELDS)
    assert "-X" not in sacct_argv(["1"], all_steps=True)
