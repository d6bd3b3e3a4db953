"""Python functions as jobs, without Slurm: the payload round trip, submitit's checkpoint rule on the task,
the failing rank's exception raised again with its remote traceback, and submitit's parameter names."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import NoReturn, cast

import cloudpickle
import pytest
from submitit.core.utils import DelayedSubmission

from launchers import Executor, FunctionFailedError, JobState, SpecError
from launchers.outcomes import RemoteTraceback, load_outcome, raise_failure, value_of
from launchers.runtime.function import FunctionTask, _write_outcome, exit_code_of, read_payload, write_payload
from launchers.submission import make_task
from tests.data.functions import Counter, RankRefusedError, square_slowly


def test_the_payload_round_trips_and_the_task_pickles_without_it(tmp_path: Path) -> None:
    payload = tmp_path / "f.pkl"
    write_payload(payload, square_slowly, (3,), {"seconds": 0})
    function, args, kwargs = read_payload(payload)
    assert function(*args, **kwargs) == 9
    task = FunctionTask(str(payload), str(tmp_path), 30.0)
    task._loaded = (function, args, kwargs)
    clone = pickle.loads(cloudpickle.dumps(task))
    assert clone._loaded is None and clone.payload == str(payload)


def test_the_task_has_checkpoint_exactly_when_the_function_has_one(tmp_path: Path) -> None:
    """submitit requeues after a time-out only when ``hasattr(function, "checkpoint")``."""
    payload = tmp_path / "f.pkl"
    task = FunctionTask(str(payload), str(tmp_path), 30.0)
    assert not hasattr(task, "checkpoint")  # not loaded yet
    task._loaded = (square_slowly, (2,), {})
    assert not hasattr(task, "checkpoint")
    counter = Counter()
    counter.done = 5
    write_payload(payload, counter, (8, "p"), {})
    task._loaded = read_payload(payload)
    cast(Counter, task._loaded[0]).done = 6  # the live object moved on since the payload was written
    requeued = task.checkpoint()
    assert isinstance(requeued, DelayedSubmission) and isinstance(requeued.function, FunctionTask)
    function, args, _ = read_payload(payload)
    assert cast(Counter, function).done == 6 and args == (8, "p")  # the requeued job resumes from the live state


def test_a_failing_ranks_exception_comes_back_with_its_type_and_traceback(tmp_path: Path) -> None:
    path = tmp_path / "o.pkl"
    try:
        raise RankRefusedError("rank 2 refuses the batch")
    except RankRefusedError as exc:
        _write_outcome(
            path, {"ok": False, "error": exc, "traceback": "Traceback...\nRankRefusedError", "exit_code": 1, "rank": 2}
        )
    error = raise_failure("17_3", JobState.FAILED, load_outcome(path.read_bytes()), None, None)
    assert isinstance(error, RankRefusedError) and str(error) == "rank 2 refuses the batch"
    assert isinstance(error.__cause__, RemoteTraceback) and "RankRefusedError" in error.__cause__.text
    assert (error.rank, error.exit_code, error.job_id) == (2, 1, "17_3")  # type: ignore[attr-defined]
    assert "raised on rank 2 of job 17_3" in error.__notes__[0]


def test_unpicklable_values_and_exceptions_still_leave_an_outcome(tmp_path: Path) -> None:
    path = tmp_path / "o.pkl"
    nothing: tuple[int, ...] = ()
    _write_outcome(path, {"ok": True, "value": (x for x in nothing), "exit_code": 0, "rank": 0})
    with pytest.raises(FunctionFailedError, match="cannot be pickled"):
        value_of("9", JobState.SUCCEEDED, load_outcome(path.read_bytes()))

    class UnpicklableError(Exception):
        def __reduce__(self) -> NoReturn:
            raise TypeError("no")

    _write_outcome(path, {"ok": False, "error": UnpicklableError("boom"), "traceback": "tb", "exit_code": 1, "rank": 1})
    error = raise_failure("9", JobState.FAILED, load_outcome(path.read_bytes()), None, None)
    assert isinstance(error, FunctionFailedError) and error.rank == 1 and "tb" in str(error)
    assert "cancelled" in str(raise_failure("9", JobState.CANCELLED, None, None, None))


@pytest.mark.parametrize(
    "exc, code", [(ValueError("x"), 1), (SystemExit(3), 3), (SystemExit(0), 1), (SystemExit("a"), 1)]
)
def test_exit_codes_of_a_raising_function(exc: BaseException, code: int) -> None:
    assert exit_code_of(exc) == code


def test_submitit_parameter_names_are_taken(tmp_path: Path) -> None:
    executor = Executor(tmp_path)
    with pytest.raises(SpecError, match="partition"):
        executor.spec()
    executor.update_parameters(timeout_min=7, slurm_partition="team-a", slurm_array_parallelism=4, nodes=2)
    spec = executor.spec(tmp_path / "functions" / "x.pkl")
    assert (spec.partition, spec.time_limit_min, spec.nodes, executor.max_parallel) == ("team-a", 7, 2, 4)
    assert spec.command == ("python-function", str(tmp_path / "functions" / "x.pkl"))
    assert isinstance(make_task(spec), FunctionTask)
    with pytest.raises(SpecError, match="unknown parameter"):
        executor.update_parameters(slurm_constraint="x")
    with pytest.raises(ValueError, match="nodes"):
        executor.update_parameters(nodes=0)
    assert executor.spec().nodes == 2  # a refused change leaves the executor as it was


def test_the_local_backend_runs_a_function(tmp_path: Path) -> None:
    executor = Executor(tmp_path, partition="local", backend="local", time=2)
    job = executor.submit(square_slowly, 5, seconds=0)
    assert job.result(timeout_s=120) == 25
    failing = executor.submit(square_slowly, "x", seconds=0)
    assert isinstance(failing.exception(timeout_s=120), TypeError)
