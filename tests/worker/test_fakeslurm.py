"""The fake itself: installed at every ``run`` the worker reaches, and read back by the project's own parsers in
the shapes the captured output of the real commands has."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from launchers import submission
from launchers.slurm import commands, shell
from launchers.slurm.ids import expand_array_id
from launchers.slurm.sacct import DELIMITER, FIELDS, sacct_argv
from launchers.slurm.shell import CommandError, CommandNotFoundError, CommandTimeoutError
from tests.worker.fakeslurm import FakeSlurm, parse_sbatch

DATA = Path(__file__).resolve().parents[1] / "data"
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d$")


def test_it_replaces_every_run_the_worker_reaches(fake: FakeSlurm) -> None:
    assert all(vars(module)["run"] is fake for module in (shell, commands, submission))


def test_sbatch_reads_the_script_and_answers_both_ways(fake: FakeSlurm, tmp_path: Path) -> None:
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/bash\n#SBATCH --comment='hpcgw:abc'\n#SBATCH --partition=team-b\necho hi\n#SBATCH --x\n")
    assert commands.sbatch(script, ["--array=0-3%2"]) == "100"
    assert fake(["sbatch", str(script)]).stdout == "Submitted batch job 101\n"
    assert [j.job_id for j in fake.elements("100")] == ["100_0", "100_1", "100_2", "100_3"]
    element = fake.job("100_3")
    assert (element.comment, element.partition, element.array_limit) == ("hpcgw:abc", "team-b", 2)
    assert fake.count("sbatch") == 2
    assert "x" not in parse_sbatch(script.read_text(), ())  # sbatch stops reading at the first command


def test_sacct_rows_read_back_with_the_projects_parser(fake: FakeSlurm) -> None:
    array = fake.submit(comment="hpcgw:sweep:s:0", array="0-3%2")
    single = fake.submit(comment="hpcgw:one", partition="team-b")
    fake.start(f"{array}_0")
    fake.finish(f"{array}_0", "FAILED", exit_code=2)
    fake.finish(single, "CANCELLED")
    rows = commands.sacct([array, single], attempts=True)
    assert [(r.job_id, r.slurm_state, r.settled) for r in rows] == [
        (f"{array}_0", "FAILED", True),
        (f"{array}_[1-3%2]", "PENDING", False),
        (single, "CANCELLED by 0", True),
    ]
    assert rows[0].exit_code == 2 and rows[0].job_id_raw != array and rows[1].job_id_raw == array
    assert rows[2].start is None and rows[2].end is not None and rows[2].node_list == "None assigned"
    found = commands.find_by_comment("hpcgw:")
    assert {c: [(f.job_id, f.user, f.account) for f in fs] for c, fs in found.items()} == {
        "hpcgw:sweep:s:0": [(array, "root", "root")],
        "hpcgw:one": [(single, "root", "root")],
    }


def test_a_row_has_the_shape_of_a_captured_one(fake: FakeSlurm) -> None:
    captured = (DATA / "requeue" / "nf-pending.sacct").read_text().splitlines()
    job = fake.submit(comment="hpcgw:nodefail1", nodes=2)
    fake.start(job, node_list="n[1-2]")
    fake.requeue(job, "NODE_FAIL")
    made = fake(sacct_argv([job], attempts=True)).stdout.splitlines()
    assert len(made) == len(captured) == 2
    user = FIELDS.index("User")  # captured before User was asked for
    for ours, theirs in zip(made, captured, strict=True):
        ours_fields, their_fields = ours.split(DELIMITER), theirs.split(DELIMITER)
        assert ours_fields.pop(user) == "root"
        assert len(ours_fields) == len(their_fields)
        for mine, real in zip(ours_fields, their_fields, strict=True):
            assert bool(STAMP.match(mine)) == bool(STAMP.match(real)) or real == "Unknown" or mine == "Unknown"
    assert made[0].split(DELIMITER)[3] == "NODE_FAIL" and made[1].split(DELIMITER)[8] == "None assigned"


def test_squeue_json_scontrol_sinfo_read_back(fake: FakeSlurm) -> None:
    array = fake.submit(comment="hpcgw:sweep:s:0", array="0-2")
    single = fake.submit(comment="hpcgw:one")
    fake.pend(single, "Resources", priority=5)
    fake.start(f"{array}_1")
    pending = commands.pending()
    assert list(pending) == [single, f"{array}_0", f"{array}_2"]  # -r: one line per element
    assert (pending[single].reason, pending[single].position) == ("Resources", 1)
    records = commands.held_jobs()
    assert [expand_array_id(r.job_id) for r in records] == [[f"{array}_0", f"{array}_2"], [f"{array}_1"], [single]]
    assert records[1].state == "RUNNING" and records[2].comment == "hpcgw:one" and records[2].user == "root"
    assert sorted(commands.queued_ids()) == sorted([array, array, single])
    fake.max_array_size = 7
    assert commands.max_array_size() == 7
    assert set(commands.partitions()) == {"team-a", "team-b"}
    assert commands.controller_state(single) == "PENDING"
    fake.forget(single)
    assert commands.controller_state(single) is None


def test_scancel_ends_a_job_or_a_whole_array(fake: FakeSlurm) -> None:
    array = fake.submit(array="0-1")
    single = fake.submit()
    commands.scancel([array, single])
    assert {j.state for j in fake.jobs.values()} == {"CANCELLED"}


@pytest.mark.parametrize(
    ("kind", "error"),
    [("unreachable", CommandError), ("timeout", CommandTimeoutError), ("missing", CommandNotFoundError)],
)
def test_failures_raise_as_the_seam_raises(fake: FakeSlurm, kind: str, error: type[CommandError]) -> None:
    fake.fail("squeue", kind, times=2)
    with pytest.raises(error) as raised:
        commands.queued_ids()
    assert type(raised.value) is error
    if kind == "unreachable":
        assert "Unable to contact slurm controller" in raised.value.stderr
    with pytest.raises(error):  # "not found" must mean that Slurm answered and does not have the job
        commands.find_by_comment("x")
    assert commands.queued_ids() == []  # healed after two failures
