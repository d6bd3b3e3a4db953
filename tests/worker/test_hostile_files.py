"""The worker's cycle over a job whose user wrote hostile files in its folder (issue 29): a started marker of the
wrong types, metrics with huge numbers and deep nesting, garbage heartbeats, provenance and exit codes, a markers
folder that is a link to another job's. The cycle goes on, the other team's job is tracked to its end, and the
hostile job's good data is kept."""

from __future__ import annotations

import os
import time
from pathlib import Path

from launchers.runtime.markers import write_atomic
from tests.worker.conftest import Gateway
from tests.worker.fakeslurm import FakeSlurm


def started(gw: Gateway, fake: FakeSlurm, job_id: str) -> None:
    fake.start(gw.slurm_id(job_id))


def test_hostile_files_harm_neither_the_cycle_nor_another_teams_job(gw: Gateway, fake: FakeSlurm) -> None:
    hostile = gw.submit(health={"hang_timeout_s": 5, "heartbeat_s": 1})
    other = gw.submit(team="team-b")
    gw.cycle()
    for job_id in (hostile, other):
        started(gw, fake, job_id)
    gw.markers(other).write_started(size=1, restart=0)
    markers = gw.markers(hostile)
    write_atomic(markers.started_path, '{"restart": "x", "size": 1, "time": 1}')
    write_atomic(markers.heartbeat_path(0, 0), '{"time": "soon", "host": [1], "progress": 7}')
    write_atomic(markers.provenance_path, '{"world_size": "x", "versions": [1], "hosts": {"a": 1}}')
    write_atomic(markers.exit_path(0, 0), "9" * 5000)
    metrics = Path(gw.job(hostile).folder) / "metrics.jsonl"
    metrics.parent.mkdir(parents=True, exist_ok=True)
    metrics.write_text(
        "\n".join(
            [
                '{"epoch": 1, "loss": 0.5}',
                '{"epoch": 2, "loss": ' + "9" * 5000 + "}",
                "[" * 100_000,
                '{"epoch": 3, "loss": 1e999, "note": "a\\u0000b"}',
            ]
        )
        + "\n"
    )
    started_at = time.monotonic()
    gw.cycle()
    for job_id in (hostile, other):
        fake.finish(gw.slurm_id(job_id), "COMPLETED")
    gw.cycle(2)
    assert time.monotonic() - started_at < 10
    assert gw.state(other) == "succeeded"
    job = gw.job(hostile)
    assert job.state in ("succeeded", "failed"), job.state
    assert job.exit_code is None or abs(job.exit_code) < 1 << 16
    assert job.provenance in (None, {})
    epochs = job.metrics
    assert [e.get("epoch") for e in epochs] == [1, 2, 3]
    assert epochs[1]["loss"] == "9" * 5000 and epochs[2]["loss"] == "1e999" and "\0" not in epochs[2]["note"]


def test_a_markers_folder_linked_to_another_jobs_is_not_believed(gw: Gateway, fake: FakeSlurm) -> None:
    mine, theirs = gw.submit(), gw.submit(team="team-b")
    gw.cycle()
    for job_id in (mine, theirs):
        started(gw, fake, job_id)
    their_markers = gw.markers(theirs)
    their_markers.write_started(size=1, restart=0)
    my_markers = gw.markers(mine)
    # a started marker under my Slurm id in their folder, reached through a link in place of my markers folder
    write_atomic(their_markers.directory / my_markers.started_path.name, '{"restart": 0, "size": 1, "time": 1}')
    if my_markers.directory.exists():
        os.rmdir(my_markers.directory)
    my_markers.directory.symlink_to(their_markers.directory)
    gw.cycle()
    assert gw.state(theirs) == "running"
    assert gw.state(mine) != "running"  # launching: no start marker of its own
