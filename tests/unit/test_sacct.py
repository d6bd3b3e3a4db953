from datetime import UTC, datetime
from pathlib import Path

from launchers.slurm.sacct import DELIMITER, FIELDS, parse_sacct, sacct_argv
from launchers.states import JobState

CAPTURED = Path(__file__).parent.parent / "data" / "sacct_3jobs_with_steps.txt"


def test_parse_captured_sacct_rows() -> None:
    """Rows captured from the local cluster: a 2-node allreduce, an `exit 3`, and a cancelled held job."""
    captured = CAPTURED.read_text()
    before = tuple(f for f in FIELDS[:-1] if f != "User")  # captured before Comment and User were asked for
    rows = {r.job_id: r for r in parse_sacct(captured, fields=before)}
    assert set(rows) == {"3", "3.batch", "3.0", "4", "4.batch", "5"}
    done = rows["3"]
    assert (done.state, done.exit_code, done.partition, done.nodes, done.node_list) == (
        JobState.SUCCEEDED,
        0,
        "team-a",
        2,
        "n[1-2]",
    )
    assert done.start == datetime(2026, 11, 23, 2, 29, 33).astimezone(UTC)  # sacct prints local time
    assert rows["3.0"].is_step and not done.is_step
    failed = rows["4"]
    assert (failed.state, failed.exit_code) == (JobState.FAILED, 3)
    cancelled = rows["5"]
    assert cancelled.state is JobState.CANCELLED
    assert cancelled.name == "we|ird name"  # the pipe in a user's job name does not split the row
    assert cancelled.start is None and cancelled.reason == "JobHeldUser"


def test_a_comment_with_a_newline_is_cut_not_misread() -> None:
    row = ["7", "7", "x", "COMPLETED", "0:0", "team-a", "team-a", "1", "n1"] + ["Unknown"] * 3 + ["00:00:00", "None"]
    row.append("alice")  # User
    text = DELIMITER.join([*row, "first line of a comment"]) + "\nsecond line\n" + DELIMITER.join(["1", "COMPLETED"])
    rows = parse_sacct(text)
    assert [(r.job_id, r.comment) for r in rows] == [("7", "first line of a comment")]


def test_sacct_argv_is_one_call_for_many_jobs() -> None:
    argv = sacct_argv(["1", "2", "3_4"])
    assert argv[:2] == ["sacct", "-X"]
    assert argv[argv.index("-j") + 1] == "1,2,3_4"
    assert argv[argv.index("-o") + 1] == ",".join(FIELDS)
    assert "-X" not in sacct_argv(["1"], all_steps=True)


def test_squeue_pending_positions_per_partition() -> None:
    from launchers.slurm.squeue import DELIMITER, parse_pending

    text = "12|Priority|team-a\n15|Resources|team-b\n13|None|team-a\n".replace("|", DELIMITER)
    pending = parse_pending(text)
    assert (pending["12"].position, pending["13"].position, pending["15"].position) == (1, 2, 1)
    assert pending["12"].reason == "Priority" and pending["13"].reason is None


def test_squeue_json_parsing() -> None:
    """slurmctld's records as ``squeue --json`` prints them (Slurm 22.05): exit code as a wait status, times as
    seconds since the epoch (0: not yet), a pending array range as its task string."""
    import json

    from gateway.worker.observe import from_held
    from launchers.slurm.squeue import parse_jobs_json

    base = {"user_name": "alice", "account": "team-a", "comment": "hpcgw:x", "state_reason": "None"}
    text = json.dumps(
        {
            "jobs": [
                base
                | {
                    "job_id": 7,
                    "array_job_id": 0,
                    "array_task_id": None,
                    "array_task_string": "",
                    "job_state": "FAILED",
                }
                | {"exit_code": 3 << 8, "submit_time": 1796401761, "start_time": 1796401762, "end_time": 1796401770},
                base
                | {"job_id": 8, "array_job_id": 8, "array_task_id": None, "array_task_string": "1-3%2"}
                | {"job_state": "PENDING", "exit_code": 0, "submit_time": 1796401761, "start_time": 0, "end_time": 0},
            ]
        }
    )
    first, second = parse_jobs_json(text)
    assert (first.job_id, second.job_id) == ("7", "8_[1-3%2]")
    seen = from_held(first)
    assert (seen.slurm_state, seen.exit_code, seen.end is not None) == ("FAILED", 3, True)
    assert from_held(second).start is None and second.user == "alice" and second.account == "team-a"
