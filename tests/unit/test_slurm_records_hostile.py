"""Slurm output that other users write into (job names and comments hold any byte): no record of theirs passes
for one of ours, no array range is expanded whole, and a record that does not read is skipped, never the cycle
(issue 29, hole 4)."""

from __future__ import annotations

import json
import subprocess
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from gateway.worker.observe import Identity, observe
from launchers.slurm import commands, sacct, shell, squeue
from launchers.slurm.ids import expand_array_id, parse_ranges, wanted_ids

SUBMITTED = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)
ALICE = Identity("hpcgw:abc", SUBMITTED, "alice", "team-a")


def row(delimiter: str, job: str, state: str, user: str, account: str = "team-a", comment: str = "hpcgw:abc") -> str:
    values = {
        "JobID": job, "JobIDRaw": job, "JobName": "hpcgw-abc", "State": state, "ExitCode": "0:0",
        "Partition": "team-a", "Account": account, "NNodes": "1", "NodeList": "n1", "Submit": "2026-11-23T16:00:00",
        "Start": "2026-11-23T16:00:01", "End": "Unknown", "Elapsed": "00:00:01", "Reason": "None", "User": user,
        "Comment": comment,
    }  # fmt: skip
    return delimiter.join(values[f] for f in sacct.FIELDS)


def held(job_id: int, user: str, state: str, **extra: Any) -> dict[str, Any]:
    return {
        "job_id": job_id, "array_job_id": 0, "array_task_id": None, "array_task_string": "", "user_name": user,
        "account": "team-a", "comment": "hpcgw:abc", "job_state": state, "state_reason": "None", "exit_code": 0,
        "submit_time": int(datetime(2026, 11, 23, 16, tzinfo=UTC).timestamp()), "start_time": 0, "end_time": 0,
        "nodes": "", "restart_cnt": 0, **extra,
    }  # fmt: skip


class Outputs:
    """The seam: sacct answers ``sacct_text(delimiter)``, squeue --json ``held_jobs``."""

    def __init__(self, sacct_text: Any, held_jobs: list[Any] | str) -> None:
        self.sacct_text, self.held_jobs = sacct_text, held_jobs
        self.delimiters: list[str] = []

    def __call__(self, argv: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        if argv[0] == "sacct":
            delimiter = sacct.delimiter_of(argv)
            self.delimiters.append(delimiter)
            text = self.sacct_text(delimiter)
            if text is None:
                raise shell.CommandError(tuple(argv), 1, "", "sacct: error: Problem talking to the database")
            return subprocess.CompletedProcess(argv, 0, text, "")
        assert list(argv) == squeue.JSON_ARGV, argv
        out = self.held_jobs if isinstance(self.held_jobs, str) else json.dumps({"jobs": self.held_jobs})
        return subprocess.CompletedProcess(argv, 0, out, "")


def test_a_comment_with_a_forged_row_cannot_guess_the_calls_delimiter() -> None:
    """bob's comment holds a newline and a whole row of alice's id with the default separator; it is never read
    as a row, because each call's delimiter is new and random."""
    forged = row(sacct.DELIMITER, "7", "COMPLETED", "alice")
    bobs = row("{d}", "8", "PENDING", "bob", "team-b", comment="x\n" + forged)

    def text(delimiter: str) -> str:
        return bobs.replace("{d}", delimiter) + "\n" + row(delimiter, "7", "RUNNING", "alice") + "\n"

    seam = Outputs(text, [])
    rows = sacct.parse_sacct(text("\x1fnonce\x1f"), delimiter="\x1fnonce\x1f")
    assert [(r.job_id, r.slurm_state, r.user) for r in rows] == [("8", "PENDING", "bob"), ("7", "RUNNING", "alice")]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(commands, "run", seam)
        obs = observe({"7": ALICE}, want_pending=False)
        observe({"7": ALICE}, want_pending=False)
    assert obs.jobs["7"].slurm_state == "RUNNING"
    assert len(set(seam.delimiters)) == 2 and all(len(d) > 8 for d in seam.delimiters)


@pytest.mark.parametrize(
    ("user", "account", "comment"),
    [("bob", "team-a", "hpcgw:abc"), ("alice", "team-b", "hpcgw:abc"), ("alice", "team-a", "hpcgw:other")],
)
def test_a_row_of_another_user_account_or_comment_under_our_id_is_not_ours(
    user: str, account: str, comment: str
) -> None:
    seam = Outputs(lambda d: row(d, "7", "COMPLETED", user, account, comment) + "\n", [])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(commands, "run", seam)
        assert observe({"7": ALICE}, want_pending=False).jobs == {}


def test_slurmctld_records_are_matched_by_user_and_account_when_accounting_is_down() -> None:
    """Accounting down: slurmctld's list of every user's jobs. bob's job named and commented as alice's array,
    a pending range of five million, and a record that does not read change nothing of alice's."""
    name = "x ArrayJobId=7 ArrayTaskId=0-5000000 JobState=COMPLETED UserId=alice(1001) Account=team-a"
    jobs: list[Any] = [
        held(9, "bob", "COMPLETED", name=name, comment=f"hpcgw:abc\nJobId=7 JobState=COMPLETED {name}\x1f"),
        held(10, "bob", "PENDING", array_job_id=7, array_task_string="0-3999999"),  # bob's "range" over alice's
        {**held(11, "alice", "PENDING"), "job_id": "not a number"},  # skipped alone
        held(7, "alice", "RUNNING", array_job_id=7, array_task_id=3),
        "not a record",
    ]
    seam = Outputs(lambda d: None, jobs)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(commands, "run", seam)
        started = time.perf_counter()
        obs = observe({"7_3": ALICE, "7_4": ALICE}, want_pending=False)
        took = time.perf_counter() - started
    assert obs.source == "scontrol" and set(obs.jobs) == {"7_3"}
    assert obs.jobs["7_3"].slurm_state == "RUNNING"
    assert took < 1.0  # no range was expanded


def test_squeue_json_that_is_no_list_fails_the_command_not_the_parse() -> None:
    seam = Outputs(lambda d: None, "squeue: error: something")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(commands, "run", seam)
        obs = observe({"7": ALICE}, want_pending=False)
    assert obs.jobs == {} and obs.source == "none" and "squeue failed" in (obs.error or "")


def test_ranges_are_intersected_never_expanded() -> None:
    wanted = {"5_3", "5_4000000", "7_1", "5"}
    started = time.perf_counter()
    assert sorted(wanted_ids("5_[0-4000000]", wanted)) == ["5_3", "5_4000000"]
    assert wanted_ids("5_[0-4000000:2]", wanted) == ["5_4000000"]
    assert time.perf_counter() - started < 0.5
    assert wanted_ids("5", wanted) == ["5"] and wanted_ids("6", wanted) == []
    with pytest.raises(ValueError, match="more than"):
        expand_array_id("5_[0-4000000]")
    for bad in ("0-99999999", "3-1", "x", "1-", "1:0", "1:", ""):
        with pytest.raises(ValueError):
            parse_ranges(bad)
    with pytest.raises(ValueError):
        wanted_ids("x_[1-2]", wanted)


def test_squeue_pending_lines_that_do_not_read_are_skipped() -> None:
    d = "\x1fn\x1f"
    text = f"12{d}Priority{d}team-a\nforged line\x1fwith\x1fold\x1fseparators\n13{d}None\n14{d}None{d}team-a\n"
    pending = squeue.parse_pending(text, d)
    assert list(pending) == ["12", "14"] and pending["14"].position == 2
