"""``Executor``: submitit's way of working (``executor.submit(train, lr=0.1).result()``), on this project's
multi-node jobs. Every rank calls the function with Horovod or torch.distributed initialised; rank 0's return
value is ``result()``, every rank's is ``results()``, and a rank's exception is raised again here with its type,
message and remote traceback.

A submitit program moves over by changing its import and its executor line (docs/examples/). What differs:
resources are named as in this project's ``JobSpec`` (``tasks_per_node``, ``gpus_per_node``, ``time`` in
minutes), and ``map_array`` takes ``max_parallel`` (Slurm's ``%K``) where submitit has ``array_parallelism``.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from launchers.errors import SpecError
from launchers.job import Job
from launchers.outcomes import OutcomeResults, load_outcome
from launchers.runtime.function import function_command, outcome_path, write_payload
from launchers.spec import ContainerSpec, Framework, JobSpec
from launchers.states import JobState
from launchers.submission import Backend, choose_backend, submit
from launchers.sweeps import submit_array

DEFAULT_MAX_PARALLEL = 256  # submitit's default array_parallelism
# submitit's parameter names (AutoExecutor's and SlurmExecutor's) -> this executor's
SUBMITIT_NAMES = {
    "time": "time_limit_min",
    "timeout_min": "time_limit_min",
    "slurm_time": "time_limit_min",
    "slurm_partition": "partition",
    "slurm_account": "account",
    "slurm_qos": "qos",
    "slurm_job_name": "name",
    "job_name": "name",
    "ntasks_per_node": "tasks_per_node",
    "slurm_gpus_per_node": "gpus_per_node",
    "slurm_cpus_per_task": "cpus_per_task",
    "slurm_mem_gb": "mem_gb",
    "array_parallelism": "max_parallel",
    "slurm_array_parallelism": "max_parallel",
}


class FunctionJob(OutcomeResults):
    """A submitted function: submitit's ``Job`` interface (``result``, ``results``, ``exception``, ``state``,
    ``cancel``, ``stdout``). Inside ``Executor.batch()`` it has no Slurm job until the block ends."""

    def __init__(self, name: str, job: Job | None = None) -> None:
        self.name = name
        self._job = job

    def __repr__(self) -> str:
        return f"FunctionJob({self.name!r}, job_id={self._job.job_id if self._job else None!r})"

    @property
    def job(self) -> Job:
        if self._job is None:
            raise RuntimeError("this job is submitted when its Executor.batch() block ends")
        return self._job

    @property
    def job_id(self) -> str:
        return self.job.job_id

    @property
    def ranks(self) -> int:
        return self.job.num_tasks

    @property
    def state(self) -> JobState:
        return self.job.state

    def done(self) -> bool:
        return self.job.state.is_terminal

    def wait(self, timeout_s: float = 3600.0) -> JobState:
        return self.job.wait(timeout_s)

    def cancel(self) -> None:
        self.job.cancel()

    def stdout(self, rank: int = 0) -> str | None:
        path = self.job.stdout(rank)
        return path.read_text(errors="replace") if path.exists() else None

    def stderr(self, rank: int = 0) -> str | None:
        path = self.job.stderr(rank)
        return path.read_text(errors="replace") if path.exists() else None

    def _outcome(self, rank: int) -> dict[str, Any] | None:
        path = outcome_path(self.job.folder, self.job_id, rank)
        return load_outcome(path.read_bytes()) if path.exists() else None

    def _settle(self, timeout_s: float) -> tuple[JobState, int | None]:
        return self.wait(timeout_s), self.job.exit_code


class Executor:
    """Submits Python functions as multi-node jobs on one partition; ``folder`` keeps the pickles, logs,
    markers and outcomes (it must be visible from the nodes, like submitit's)."""

    def __init__(
        self,
        folder: str | Path,
        *,
        partition: str | None = None,
        nodes: int = 1,
        tasks_per_node: int = 1,
        gpus_per_node: int = 0,
        cpus_per_task: int = 1,
        mem_gb: float | None = None,
        time: int = 60,
        container: ContainerSpec | None = None,
        framework: Framework = "horovod",
        account: str | None = None,
        qos: str | None = None,
        name: str = "hpcgw-function",
        max_parallel: int = DEFAULT_MAX_PARALLEL,
        max_requeues: int = 3,
        backend: Backend = "auto",
    ) -> None:
        self.folder = Path(folder).expanduser().absolute()
        self.backend = backend
        self.max_parallel = max_parallel
        self._parameters: dict[str, Any] = {
            "name": name,
            "partition": partition,
            "nodes": nodes,
            "tasks_per_node": tasks_per_node,
            "gpus_per_node": gpus_per_node,
            "cpus_per_task": cpus_per_task,
            "mem_gb": mem_gb,
            "time_limit_min": time,
            "container": container or ContainerSpec(),
            "framework": framework,
            "account": account,
            "qos": qos,
            "max_requeues": max_requeues,
        }
        if partition is not None:
            self.spec()  # bad parameters fail here, naming the field, not at the first submit
        self._batch: list[tuple[FunctionJob, Path]] | None = None

    def update_parameters(self, **parameters: Any) -> None:
        """Changes resources between submissions. submitit's names are taken too (``timeout_min``,
        ``slurm_partition``, ``slurm_array_parallelism``...), so that a submitit program keeps its own lines."""
        parameters = {SUBMITIT_NAMES.get(name, name): value for name, value in parameters.items()}
        if "max_parallel" in parameters:
            self.max_parallel = int(parameters.pop("max_parallel"))
        unknown = set(parameters) - set(self._parameters)
        if unknown:
            raise SpecError(sorted(unknown)[0], f"unknown parameter; known: {', '.join(sorted(self._parameters))}")
        previous = dict(self._parameters)
        self._parameters.update(parameters)
        try:
            if self._parameters["partition"] is not None:
                self.spec()
        except Exception:
            self._parameters = previous
            raise

    def spec(self, payload: Path | None = None) -> JobSpec:
        """The job spec each submission gets (``payload``: its function's file)."""
        if self._parameters["partition"] is None:
            raise SpecError("partition", "name the partition: Executor(folder, partition=...)")
        return JobSpec.model_validate(
            {
                **self._parameters,
                "folder": self.folder,
                "command": tuple(function_command(payload or "-")),
                "function": payload,
            }
        )

    def submit(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> FunctionJob:
        """One job of ``nodes`` x ``tasks_per_node`` ranks, each calling ``function(*args, **kwargs)``."""
        if not callable(function):
            raise SpecError("function", f"{function!r} is not callable")
        payload = self._payload(function, args, kwargs)
        handle = FunctionJob(_name(function))
        if self._batch is not None:
            self._batch.append((handle, payload))
            return handle
        handle._job = submit(self.spec(payload), self.backend)
        return handle

    def map_array(
        self, function: Callable[..., Any], *iterables: Iterable[Any], max_parallel: int | None = None
    ) -> list[FunctionJob]:
        """One Slurm job array, element i calling ``function(*[it[i] for it in iterables])``, at most
        ``max_parallel`` at once (``--array=0-N%K``); the handles come back in input order."""
        calls = list(zip(*iterables, strict=True))
        if not calls:
            return []
        handles = [FunctionJob(_name(function)) for _ in calls]
        payloads = [self._payload(function, tuple(args), {}) for args in calls]
        self._submit_array(handles, payloads, max_parallel)
        return handles

    @contextlib.contextmanager
    def batch(self, max_parallel: int | None = None) -> Iterator[None]:
        """Every ``submit`` inside the block becomes an element of one job array, sent when the block ends (and
        not at all if it raises)."""
        if self._batch is not None:
            raise RuntimeError("Executor.batch() blocks do not nest")
        self._batch = []
        try:
            yield
            pending, self._batch = self._batch, None
            if pending:
                self._submit_array([h for h, _ in pending], [p for _, p in pending], max_parallel)
        finally:
            self._batch = None

    def _submit_array(self, handles: list[FunctionJob], payloads: list[Path], max_parallel: int | None) -> None:
        if choose_backend(self.backend) != "slurm":
            raise SpecError("backend", "job arrays (map_array, batch) need Slurm")
        spec = self.spec(payloads[0])
        jobs = submit_array(spec, [spec.env] * len(payloads), max_parallel or self.max_parallel, functions=payloads)
        for handle, job in zip(handles, jobs, strict=True):
            handle._job = job

    def _payload(self, function: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Path:
        folder = self.folder / "functions"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{uuid.uuid4().hex}.pkl"
        write_payload(path, function, args, kwargs)
        return path


def _name(function: Callable[..., Any]) -> str:
    return getattr(function, "__qualname__", None) or type(function).__qualname__
