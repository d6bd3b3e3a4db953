"""The one privilege path: the exact argv a Slurm command runs with as another user, and what is refused."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from launchers.slurm import commands
from launchers.slurm.privilege import PrivilegeError, as_user_argv, current_user
from launchers.spec import JobSpec


def test_another_user_goes_through_sudo_without_a_password_prompt() -> None:
    assert as_user_argv("alice", ["sbatch", "--parsable", "/x/job.sh"]) == (
        "sudo", "-n", "-u", "alice", "--", "sbatch", "--parsable", "/x/job.sh",
    )  # fmt: skip


def test_oneself_needs_no_sudo() -> None:
    assert as_user_argv(current_user(), ["scancel", "7"]) == ("scancel", "7")


@pytest.mark.parametrize("name", ["-u", "root -s", "Alice", "a/b", "", "x" * 33, "bob\n"])
def test_a_name_that_is_no_unix_name_is_refused(name: str) -> None:
    with pytest.raises(PrivilegeError):
        as_user_argv(name, ["sbatch"])
    with pytest.raises(ValueError, match="valid Unix"):
        JobSpec(partition="p", command=("true",), folder=Path("/tmp/x"), run_as=name)


def test_scancel_runs_as_the_jobs_user_through_the_one_seam(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, ...]] = []

    def fake(argv: tuple[str, ...], **_: object) -> subprocess.CompletedProcess[str]:
        seen.append(argv)
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr("launchers.slurm.shell.subprocess.run", fake)
    commands.scancel(["12", "13_4"], as_user="bob")
    assert seen == [("sudo", "-n", "-u", "bob", "--", "scancel", "12", "13_4")]
