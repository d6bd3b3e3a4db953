"""What the gateway reads of a job's files: a regular file only, never through a symlink the job planted."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.worker.metrics import MetricsReader
from launchers.files import NotARegularFileError, read_job_file


def test_a_regular_file_is_read(tmp_path: Path) -> None:
    (tmp_path / "m.jsonl").write_text('{"epoch": 1}\n')
    assert read_job_file(tmp_path / "m.jsonl") == '{"epoch": 1}\n'


def test_a_symlink_to_another_teams_file_is_not_followed(tmp_path: Path) -> None:
    secret = tmp_path / "team-a-metrics.jsonl"
    secret.write_text('{"epoch": 1, "accuracy": 0.99}\n')
    planted = tmp_path / "metrics.jsonl"
    planted.symlink_to(secret)
    with pytest.raises(OSError):
        read_job_file(planted)
    assert MetricsReader().read("job", planted) is None


def test_a_fifo_does_not_block_the_reader(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "metrics.jsonl")
    with pytest.raises(NotARegularFileError):
        read_job_file(tmp_path / "metrics.jsonl")


def test_a_huge_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "m").write_bytes(b"x" * 2048)
    with pytest.raises(NotARegularFileError, match="larger"):
        read_job_file(tmp_path / "m", max_bytes=1024)
