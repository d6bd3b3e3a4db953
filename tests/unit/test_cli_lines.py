"""`hpcgw jobs` and `status` lines as squeue prints them: full ids within 80 columns, squeue's format codes, and
plain follow lines that each carry a change."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.cli import lines
from gateway.schemas import JobPublic
from launchers.resources import Resources
from launchers.states import JobState

NOW = datetime.now(UTC)


def job(job_id: str = "9214ab07c3d2e1f0", **fields: object) -> JobPublic:
    values: dict[str, object] = {
        "id": job_id,
        "name": "a-very-long-job-name-indeed",
        "team": "team-a",
        "user": "alice-with-a-long-name",
        "state": JobState.RUNNING,
        "slurm_job_id": "12345_17",
        "slurm_state": "RUNNING",
        "reason": None,
        "position_in_queue": None,
        "exit_code": None,
        "restarts": 0,
        "submit_time": NOW - timedelta(hours=2),
        "start_time": NOW - timedelta(hours=1, minutes=2, seconds=3),
        "end_time": NOW,  # a fixed clock: the module is imported long before some tests run
        "partition": "team-a-gpu-long",
        "account": "team-a",
        "qos": None,
        "resources": Resources(nodes=2, tasks_per_node=2),
        "algorithm": "intent-classifier",
        "algorithm_version": "1.0",
        "image": "i.sif",
        "image_digest": None,
        "dataset_id": "intents",
        "train_data_version_hash": "ada836d3257014621223ba899b5526a0e2bb16842de262c81b83009bc8cfb6db",
        "parameters": {},
        "idempotency_key": None,
        "rerun_of": None,
    }
    return JobPublic.model_validate(values | fields)


def test_the_default_lines_fit_80_columns_with_full_ids() -> None:
    waiting = job("77c1e2d0aa11bb22", state=JobState.QUEUED, reason="Priority: 3 jobs ahead", start_time=None)
    text = lines.render([job(), waiting])
    rows = text.splitlines()
    assert rows[0].split() == ["JOBID", "PARTITION", "NAME", "USER", "ST", "TIME", "NODES", "REASON"]
    assert all(len(row) <= 80 for row in rows), [len(r) for r in rows]
    assert rows[1].split()[0] == "9214ab07c3d2e1f0" and rows[2].split()[0] == "77c1e2d0aa11bb22"
    assert " R " in rows[1] and "1:02:03" in rows[1] and " PD " in rows[2] and "Priority" in rows[2]


def test_format_codes_follow_squeue() -> None:
    text = lines.render([job()], "%.16i|%8u|%T|%.4D|%A", width=None)
    assert text.splitlines() == [
        "           JOBID|USER    |STATE|NODE|SLURMID",  # squeue cuts headers too
        "9214ab07c3d2e1f0|alice-wi|running|   2|12345_17",
    ]
    with pytest.raises(lines.FormatError, match="unknown format code %Z"):
        lines.render([], "%i %Z")
    assert lines.render([job()], "%i", header=False) == "9214ab07c3d2e1f0"
    assert set(lines.COMPACT) == set(JobState)  # every state has its two letters


def test_elapsed_reads_like_squeue() -> None:
    started = NOW - timedelta(days=1, hours=2, minutes=3, seconds=4)
    assert lines.elapsed(job(start_time=started, end_time=NOW)) == "1-02:03:04"
    assert lines.elapsed(job(start_time=NOW - timedelta(seconds=75), end_time=NOW)) == "1:15"
    assert lines.elapsed(job(start_time=None)) == "0:00"


def test_a_follow_line_shows_everything_that_can_change() -> None:
    queued = job(state=JobState.QUEUED, slurm_state="PENDING", reason="Resources", position_in_queue=2)
    moved = job(state=JobState.QUEUED, slurm_state="PENDING", reason="Resources", position_in_queue=1)
    assert lines.change_line(queued) != lines.change_line(moved)  # only the position changed, and it shows
    assert "position 2" in lines.change_line(queued) and "reason Resources" in lines.change_line(queued)
    assert lines.change_line(job(), epochs=3).endswith("epochs 3")
