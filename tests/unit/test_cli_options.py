"""The command line without a gateway or a cluster: flags become one Resources, bad values are usage errors
(exit code 2) that name the field, and `--direct` maps a job's outcome to the same exit codes as the gateway path.
The launchers' submission is replaced by fakes here; the real one runs in tests/slurm/test_cli.py."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import launchers.submission
import launchers.sweeps
from gateway.cli.main import app
from gateway.cli.options import parse_mem_gb, parse_time_min, resources_from_flags
from gateway.cli.views import exit_code
from launchers.errors import SpecError, SubmitError
from launchers.resources import Resources
from launchers.spec import JobSpec
from launchers.states import JobState

runner = CliRunner()
NO_GATEWAY = {"HPCGW_URL": "http://127.0.0.1:9", "HPCGW_TOKEN": "t"}


@dataclass
class FakeJob:
    job_id: str
    state: JobState = JobState.SUCCEEDED
    exit_code: int | None = 0

    def wait(self, timeout_s: float) -> JobState:
        return self.state


def hpcgw(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env=NO_GATEWAY)
    return result.exit_code, result.output


def test_resources_from_flags_uses_the_launchers_parsers() -> None:
    res = resources_from_flags(
        nodes=2, ntasks_per_node=4, gpus_per_node=1, cpus_per_task=3, mem="4000M", time_limit="1-0:00:30"
    )
    assert res == Resources(
        nodes=2, tasks_per_node=4, gpus_per_node=1, cpus_per_task=3, mem_gb=4000 / 1024, time_limit_min=24 * 60 + 1
    )
    assert parse_time_min("90") == 90 and parse_mem_gb("2G") == 2
    with pytest.raises(typer.BadParameter, match="not a Slurm time"):
        parse_time_min("soon")
    with pytest.raises(typer.BadParameter, match="not a memory size"):
        parse_mem_gb("lots")
    with pytest.raises(typer.BadParameter, match="nodes: Input should be greater than or equal to 1"):
        resources_from_flags(nodes=0, ntasks_per_node=1, cpus_per_task=1, time_limit="60")


@pytest.mark.parametrize(
    "args",
    [
        ["submit", "--algorithm", "a", "--dataset", "d", "--data-version", "h", "-N", "0"],
        ["render", "--algorithm", "a", "--dataset", "d", "--data-version", "h", "-N", "0"],
        ["sweep", "--grid", "LR=1", "--algorithm", "a", "--dataset", "d", "--data-version", "h", "-N", "0"],
        ["submit", "--direct", "-p", "team-a", "-N", "0", "--", "true"],
    ],
)
def test_a_bad_resource_is_a_usage_error_naming_the_field(args: list[str]) -> None:
    code, output = hpcgw(*args)
    assert code == 2 and "nodes: Input should be greater than or equal to 1" in output


def test_a_bad_request_field_is_a_usage_error() -> None:
    code, output = hpcgw("submit", "--algorithm", "a", "--dataset", "d", "--data-version", "h", "--param", "lr=1")
    assert code == 2 and "parameters:" in output


@pytest.mark.parametrize(
    ("state", "code", "expected"),
    [
        (JobState.SUCCEEDED, 0, 0),
        (JobState.FAILED, 3, 3),
        (JobState.FAILED, None, 1),
        (JobState.TIMEOUT, None, 124),
        (JobState.CANCELLED, None, 130),
    ],
)
def test_direct_submit_wait_exit_codes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, state: JobState, code: int | None, expected: int
) -> None:
    submitted: list[JobSpec] = []

    def fake_submit(spec: JobSpec) -> FakeJob:
        submitted.append(spec)
        return FakeJob("77", state, code)

    monkeypatch.setattr(launchers.submission, "submit", fake_submit)
    rc, output = hpcgw(
        "submit", "--direct", "-p", "team-a", "-N", "2", "--mem", "2G", "-t", "5", "--param", "A=1",
        "--folder", str(tmp_path), "--wait", "--json", "--", "python", "-m", "x",
    )  # fmt: skip
    assert rc == expected == exit_code(state, code)
    assert json.loads(output) == {"job_id": "77", "state": state.value, "exit_code": code}
    (spec,) = submitted
    assert spec.resources() == Resources(nodes=2, mem_gb=2, time_limit_min=5)
    assert spec.command == ("python", "-m", "x") and spec.env == {"A": "1"} and spec.folder == tmp_path


@pytest.mark.parametrize(("error", "expected"), [(SpecError("nodes", "too many"), 2), (SubmitError("down"), 1)])
def test_direct_submit_refusals(monkeypatch: pytest.MonkeyPatch, error: Exception, expected: int) -> None:
    def refuse(spec: JobSpec) -> FakeJob:
        raise error

    monkeypatch.setattr(launchers.submission, "submit", refuse)
    rc, output = hpcgw("submit", "--direct", "-p", "team-a", "--folder", "/nonexistent/x", "--", "true")
    assert rc == expected and str(error) in output


def test_direct_sweep_names_each_array_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def fake_sweep(spec: JobSpec, space: object, max_parallel: int) -> list[FakeJob]:
        assert spec.resources() == Resources(cpus_per_task=2) and max_parallel == 1
        return [FakeJob("12_0"), FakeJob("12_1"), FakeJob("13_0")]

    monkeypatch.setattr(launchers.sweeps, "sweep", fake_sweep)
    rc, output = hpcgw(
        "sweep", "--direct", "--grid", "LR=1,2,3", "--max-parallel", "1", "-c", "2", "-p", "team-a",
        "--folder", str(tmp_path), "--json", "--", "true",
    )  # fmt: skip
    assert rc == 0, output
    out = json.loads(output)
    assert out["arrays"] == ["12", "13"] and [t["parameters"] for t in out["tasks"]] == [
        {"LR": "1"},
        {"LR": "2"},
        {"LR": "3"},
    ]
