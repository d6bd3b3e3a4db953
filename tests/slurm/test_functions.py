"""On Slurm: Python functions as jobs (launchers.Executor), the way submitit users work: a Horovod allreduce on
2 nodes x 2 tasks, an array with a throttle, a rank's exception raised again here, a checkpointable function
requeued from its own state, and the docs' example that moves a submitit program over."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import pytest
from fastapi.testclient import TestClient

from devcluster.spec import ClusterSpec
from gateway.app import create_app
from gateway.client import Client, ClientError
from gateway.config import FunctionsConfig
from launchers import Executor, FunctionFailedError, JobState
from launchers.outcomes import RemoteTraceback
from tests.data import functions
from tests.data.functions import RankRefusedError
from tests.gateway.conftest import TOKENS
from tests.slurm.support import IMAGE, RUNTIME, gateway_config, max_overlap, sacct_array

pytestmark = pytest.mark.slurm
ROOT = Path(__file__).resolve().parents[2]


def test_a_function_allreduces_over_two_nodes_and_every_rank_returns(cluster: ClusterSpec, tmp_path: Path) -> None:
    executor = Executor(tmp_path, partition="team-a", nodes=2, tasks_per_node=2, time=5)
    job = executor.submit(functions.horovod_allreduce, scale=2.0)
    assert job.result(timeout_s=300)["sum"] == 20.0  # 2 * (1 + 2 + 3 + 4)
    results = job.results()
    assert [(r["rank"], r["size"], r["local_rank"], r["sum"]) for r in results] == [
        (0, 4, 0, 20.0),
        (1, 4, 1, 20.0),
        (2, 4, 0, 20.0),
        (3, 4, 1, 20.0),
    ]
    assert job.state is JobState.SUCCEEDED and job.exception() is None
    row = job.job.info()
    assert row is not None and row.nodes == 2
    stderr = job.stderr(0)
    assert stderr is not None and "calling tests.data.functions.horovod_allreduce" in stderr


def test_a_ddp_function_gets_an_initialised_process_group(cluster: ClusterSpec, tmp_path: Path) -> None:
    executor = Executor(tmp_path, partition="team-a", nodes=2, tasks_per_node=1, time=5, framework="ddp")
    assert executor.submit(functions.ddp_allreduce).results(timeout_s=300) == [
        {"rank": 0, "size": 2, "sum": 3.0},
        {"rank": 1, "size": 2, "sum": 3.0},
    ]


def test_map_array_is_one_throttled_array_with_results_in_input_order(cluster: ClusterSpec, tmp_path: Path) -> None:
    executor = Executor(tmp_path, partition="team-a", time=5)
    jobs = executor.map_array(functions.square_slowly, range(12), [2.0] * 12, max_parallel=3)
    assert [job.result(timeout_s=600) for job in jobs] == [x * x for x in range(12)]
    master = jobs[0].job_id.split("_")[0]
    assert [job.job_id for job in jobs] == [f"{master}_{i}" for i in range(12)]
    rows = sacct_array(master)
    assert sorted(r[0] for r in rows) == sorted(job.job_id for job in jobs)
    assert {r[1] for r in rows} == {"COMPLETED"}
    assert max_overlap(rows) <= 3


def test_batch_submits_one_array_when_the_block_ends(cluster: ClusterSpec, tmp_path: Path) -> None:
    executor = Executor(tmp_path, partition="team-a", time=5)
    with executor.batch():
        first = executor.submit(functions.square_slowly, 3, seconds=0)
        second = executor.submit(functions.square_slowly, 4, seconds=0)
        with pytest.raises(RuntimeError, match="batch"):
            _ = first.job_id  # nothing reached Slurm yet
    assert (first.result(timeout_s=300), second.result(timeout_s=300)) == (9, 16)
    assert first.job_id.split("_")[0] == second.job_id.split("_")[0]


def test_a_rank_that_raises_raises_here_with_its_type_message_and_traceback(
    cluster: ClusterSpec, tmp_path: Path
) -> None:
    executor = Executor(tmp_path, partition="team-a", nodes=2, tasks_per_node=2, time=5)
    job = executor.submit(functions.refuse_on_rank, 2)
    with pytest.raises(RankRefusedError, match="rank 2 refuses the batch") as caught:
        job.result(timeout_s=300)
    error = caught.value
    assert isinstance(error.__cause__, RemoteTraceback)
    assert "in refuse_on_rank\n    raise RankRefusedError" in error.__cause__.text
    assert (error.rank, error.exit_code) == (2, 1)  # type: ignore[attr-defined]
    assert job.state is JobState.FAILED
    row = job.job.info()
    assert row is not None and row.slurm_state == "FAILED" and row.exit_code == 1


def test_a_cancelled_function_raises_a_failed_error(cluster: ClusterSpec, tmp_path: Path) -> None:
    executor = Executor(tmp_path, partition="team-a", time=5)
    job = executor.submit(functions.square_slowly, 2, seconds=600)
    deadline = time.monotonic() + 120
    while job.state is not JobState.RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.5)
    job.cancel()
    with pytest.raises(FunctionFailedError, match="cancelled") as caught:
        job.result(timeout_s=120)
    assert caught.value.state is JobState.CANCELLED


def test_a_checkpointable_function_is_requeued_with_its_own_state(cluster: ClusterSpec, tmp_path: Path) -> None:
    executor = Executor(tmp_path, partition="team-a", time=10)
    progress = tmp_path / "progress"
    job = executor.submit(functions.Counter(hold_after=3), 16, str(progress))
    deadline = time.monotonic() + 120
    while not (progress.exists() and int(progress.read_text() or 0) >= 3):
        assert time.monotonic() < deadline and not job.done()
        time.sleep(0.2)
    # What Slurm sends before a preemption or time-out (`--signal=USR2@…`): submitit calls checkpoint and requeues.
    subprocess.run(["scancel", "--signal=USR2", job.job_id], check=True, timeout=30)
    result = job.result(timeout_s=300)
    assert result["done"] == 16
    assert result["resumed_from"] == [0, 3]  # the second run kept the first's count
    history = subprocess.run(
        ["sacct", "-D", "-X", "-n", "-P", "-o", "State", "-j", job.job_id], capture_output=True, text=True, check=True
    ).stdout.split()
    assert history == ["REQUEUED", "COMPLETED"]


def test_one_checkpointed_element_of_an_array_resumes_alone(cluster: ClusterSpec, tmp_path: Path) -> None:
    """The elements share one pickle, hard-linked under each one's name: submitit's checkpoint replaces only the
    signalled element's link, which then runs again from its own state while the other element keeps the shared
    pickle."""
    executor = Executor(tmp_path, partition="team-a", time=10)
    progress = tmp_path / "progress"
    with executor.batch():
        counter = executor.submit(functions.Counter(hold_after=3), 8, str(progress))
        other = executor.submit(functions.square_slowly, 5, seconds=0)
    master = counter.job_id.split("_")[0]
    assert other.job_id == f"{master}_1"
    deadline = time.monotonic() + 120
    while not (progress.exists() and int(progress.read_text() or 0) >= 3):
        assert time.monotonic() < deadline and not counter.done()
        time.sleep(0.2)
    subprocess.run(["scancel", "--signal=USR2", counter.job_id], check=True, timeout=30)
    assert counter.result(timeout_s=300) == {"done": 8, "resumed_from": [0, 3]}
    assert other.result(timeout_s=300) == 25
    [shared] = tmp_path.rglob("elements-*.pkl")
    folder = shared.parent
    assert (folder / f"{master}_1_submitted.pkl").stat().st_ino == shared.stat().st_ino
    assert (folder / f"{master}_0_submitted.pkl").stat().st_ino != shared.stat().st_ino
    history = subprocess.run(
        ["sacct", "-D", "-X", "-n", "-P", "-o", "State", "-j", counter.job_id],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert history == ["REQUEUED", "COMPLETED"]


def test_the_docs_example_moves_a_submitit_program_over(cluster: ClusterSpec, tmp_path: Path) -> None:
    example = ROOT / "docs" / "examples" / "from_submitit.py"
    done = subprocess.run(
        [sys.executable, str(example), "--folder", str(tmp_path / "jobs"), "--partition", "team-a"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert "loss for lr=0.1: 0.81" in lines
    assert "sum over 4 ranks: 10.0" in lines
    assert "squares: [0, 1, 4, 9, 16]" in lines


@pytest.fixture
def function_gateway(cluster: ClusterSpec, tmp_path: Path) -> Iterator[TestClient]:
    config = gateway_config(tmp_path)
    config.functions = FunctionsConfig(enabled=True, teams=["team-a"], image=IMAGE if RUNTIME == "apptainer" else None)
    # In the image there is no `tests` package: the test functions travel by value (their exceptions come back as
    # the same classes, cloudpickle tracks them); a site's functions live in an importable package of the image.
    cloudpickle.register_pickle_by_value(functions)
    try:
        with TestClient(create_app(config)) as client:
            yield client
    finally:
        cloudpickle.unregister_pickle_by_value(functions)


def as_user(gateway: TestClient, user: str) -> Client:
    """The project's Client, over the in-process gateway's transport."""
    return Client("http://testserver", TOKENS[user], transport=gateway._transport, backoff_s=0.2)


def test_the_gateway_runs_a_function_as_the_tokens_user(function_gateway: TestClient) -> None:
    with as_user(function_gateway, "alice") as alice:
        job = alice.submit_function(
            functions.horovod_allreduce, 1.0, resources={"nodes": 2, "tasks_per_node": 2, "time_limit_min": 5}
        )
        assert [r["sum"] for r in job.results(timeout_s=300)] == [10.0] * 4
        assert [r["rank"] for r in job.results()] == [0, 1, 2, 3]
        record = alice.job(job.job_id)
        assert (record.state, record.user, record.algorithm) == (JobState.SUCCEEDED, "alice", "python-function")
        owner = subprocess.run(
            ["sacct", "-X", "-n", "-P", "-o", "User,State,NNodes", "-j", record.slurm_job_id or "none"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert owner == ["alice|COMPLETED|2"]

        failing = alice.submit_function(functions.refuse_on_rank, 2, resources={"nodes": 2, "tasks_per_node": 2})
        with pytest.raises(RankRefusedError, match="rank 2 refuses") as caught:
            failing.result(timeout_s=300)
        assert isinstance(caught.value.__cause__, RemoteTraceback)
        assert alice.job(failing.job_id).state is JobState.FAILED
    with as_user(function_gateway, "bob") as bob, pytest.raises(ClientError) as refused:
        bob.submit_function(functions.square_slowly, 2)
    assert refused.value.status_code == 403
