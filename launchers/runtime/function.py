"""A Python function as a job: every rank calls it in its own task process, with Horovod or torch.distributed
already initialised, and leaves its outcome (the return value, or the exception with its traceback) in a file.

The function, its arguments and keyword arguments travel in a payload file (cloudpickle), not in the task's own
pickle. The task names only the file's path, so a gateway can submit a function without ever unpickling it: the
payload is read on the node, by the job's own user.

Outcome files are ``<folder>/<slurm id>_<rank>_outcome.pkl``: ``{"ok", "value" | "error", "traceback",
"exit_code", "rank", "host"}``. Every rank writes its own, so that ``results()`` has one value per rank and a
failure on any rank keeps that rank's exception.

Checkpointing follows submitit: submitit calls ``checkpoint`` on rank 0's live task at the preemption or time-out
signal, and this task has one exactly when the user's function object has one. Its answer (a new
``DelayedSubmission``) replaces the payload, and the requeued job calls that.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cloudpickle
from submitit.core.utils import DelayedSubmission

from launchers.runtime.task import RankRun, TrainerTask

log = logging.getLogger("hpcgw.function")

OUTCOME_SUFFIX = "_outcome.pkl"
FUNCTION_COMMAND = "python-function"
EXIT_EXCEPTION = 1  # a function that raises; SystemExit(n) leaves with n


def write_payload(path: Path, function: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Atomically, since a checkpoint rewrites it while the job may be requeued at any moment."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(cloudpickle.dumps((function, tuple(args), dict(kwargs))))
    os.replace(tmp, path)


def read_payload(path: Path) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
    with path.open("rb") as handle:
        function, args, kwargs = cloudpickle.load(handle)
    return function, args, kwargs


def outcome_path(folder: Path, slurm_job_id: str, rank: int) -> Path:
    return folder / f"{slurm_job_id}_{rank}{OUTCOME_SUFFIX}"


def function_command(payload: str | Path) -> list[str]:
    """What a function job shows where a trainer's job shows its command line (logs, provenance, the API)."""
    return [FUNCTION_COMMAND, str(payload)]


def describe(function: Callable[..., Any]) -> str:
    """A name for logs and the job's command line: ``module.qualname``."""
    module = getattr(function, "__module__", None) or "?"
    name = getattr(function, "__qualname__", None) or type(function).__qualname__
    return f"{module}.{name}"


class FunctionTask(TrainerTask):
    """Runs ``payload``'s function on every rank, in this process (not a child), after the same rendezvous as a
    trainer's; the job's folder keeps each rank's outcome."""

    def __init__(self, payload: str, folder: str, rendezvous_timeout_s: float, framework: str = "horovod") -> None:
        super().__init__(function_command(payload), {}, folder, rendezvous_timeout_s, "gloo", framework)
        self.payload = payload
        self._loaded: tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_loaded": None}  # the payload file is the one copy of the function

    @property
    def checkpoint(self) -> Callable[..., DelayedSubmission | None]:  # type: ignore[override]
        """Present only when the loaded function has one: submitit requeues a function without one after a
        preemption, but not after a time-out (``hasattr(function, "checkpoint")``)."""
        own = self._user_checkpoint()
        if own is None:
            raise AttributeError("checkpoint")

        def checkpoint(*_args: Any, **_kwargs: Any) -> DelayedSubmission | None:
            assert self._loaded is not None
            args, kwargs = self._loaded[1], self._loaded[2]
            delayed = own(*args, **kwargs)
            if delayed is None:
                return None
            write_payload(Path(self.payload), delayed.function, delayed.args, delayed.kwargs)
            log.info("checkpointed %s into %s", describe(delayed.function), self.payload)
            return DelayedSubmission(FunctionTask(self.payload, self.folder, self.rendezvous_timeout_s, self.framework))

        return checkpoint

    def _user_checkpoint(self) -> Callable[..., DelayedSubmission | None] | None:
        if self._loaded is None:
            return None
        function = self._loaded[0]
        found = getattr(function, "__submitit_checkpoint__", None) or getattr(function, "checkpoint", None)
        return found if callable(found) else None

    def _run(self, run: RankRun) -> int:
        rank = run.topology.rank
        target = outcome_path(Path(self.folder), run.markers.job_id, rank)
        target.unlink(missing_ok=True)  # a requeued run's outcome is its own
        os.environ.update(run.env)
        signalled = _note_signals()
        try:
            self._loaded = read_payload(Path(self.payload))
            function, args, kwargs = self._loaded
            log.info("%s: calling %s", run.tag, describe(function))
            with initialised(self.framework, run.topology.local_rank):
                value = function(*args, **kwargs)
        except BaseException as exc:
            if signalled:  # submitit's own exit after the preemption/time-out signal: it requeues or ends the job
                raise
            code = exit_code_of(exc)
            text = traceback.format_exc()
            log.error("%s: the function raised %s", run.tag, type(exc).__name__)
            sys.stderr.write(text)
            _write_outcome(target, {"ok": False, "error": exc, "traceback": text, "exit_code": code, "rank": rank})
            return code
        _write_outcome(target, {"ok": True, "value": value, "exit_code": 0, "rank": rank})
        return 0


def _note_signals() -> list[int]:
    """Wraps submitit's handler of the preemption signal, noting that it ran: the ``SystemExit`` (requeued) or
    ``UncompletedJobError`` (not requeued) it raises in the function's frame is submitit's, not the function's."""
    seen: list[int] = []
    previous = signal.getsignal(signal.SIGUSR2)
    if not callable(previous):
        return seen

    def noting(signum: int, frame: Any) -> None:
        seen.append(signum)
        previous(signum, frame)

    signal.signal(signal.SIGUSR2, noting)
    return seen


def exit_code_of(exc: BaseException) -> int:
    if isinstance(exc, SystemExit):
        code = exc.code
        return code if isinstance(code, int) and code != 0 else EXIT_EXCEPTION
    return EXIT_EXCEPTION


def _write_outcome(path: Path, outcome: dict[str, Any]) -> None:
    outcome["host"] = socket.gethostname()
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        data = cloudpickle.dumps(outcome)
    except Exception as exc:
        kept = {k: v for k, v in outcome.items() if k not in ("value", "error")}
        if "error" in outcome:
            kept["error_type"] = type(outcome["error"]).__qualname__
            kept["error_message"] = str(outcome["error"])
        else:
            kept["ok"] = False
            kept["traceback"] = f"the function's return value cannot be pickled: {exc!r}"
            kept["exit_code"] = 0
        data = cloudpickle.dumps(kept)
    tmp.write_bytes(data)
    os.replace(tmp, path)


@contextlib.contextmanager
def initialised(framework: str, local_rank: int) -> Iterator[None]:
    """Horovod (``hvd.init()``) or torch.distributed (``init_process_group``, NCCL on GPUs, Gloo otherwise) for
    the function's duration, from the variables the task has just set."""
    if framework == "ddp":
        import torch
        import torch.distributed as dist

        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank % torch.cuda.device_count())
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
        try:
            yield
        finally:
            dist.destroy_process_group()
        return
    import horovod.torch as hvd

    hvd.init()
    try:
        yield
    finally:
        hvd.shutdown()
