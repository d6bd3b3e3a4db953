"""A submitted job, as a researcher holds it: its state, its logs, its result.

For a single job on a login node, one ``sacct`` call per ``.state`` is fine; the gateway does not use this class
to track jobs (it polls in batches).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import submitit
from submitit.core.utils import pickle_load

from launchers.runtime.markers import JobMarkers
from launchers.slurm.commands import controller_state, sacct, scancel
from launchers.slurm.sacct import SacctRow
from launchers.states import MAY_RUN_AGAIN, JobState, from_slurm, slurm_base_state


class JobFailedError(RuntimeError):
    """The job ended in a state other than succeeded; carries the state and the trainer's exit code."""

    def __init__(self, job: Job, state: JobState, exit_code: int | None, detail: str = "") -> None:
        self.job_id, self.state, self.exit_code = job.job_id, state, exit_code
        super().__init__(f"job {job.job_id} {state.value} (exit code {exit_code})" + (f": {detail}" if detail else ""))


class Job:
    def __init__(self, submitit_job: submitit.Job[Any], folder: Path, backend: str, num_tasks: int) -> None:
        self._job = submitit_job
        self.job_id: str = str(submitit_job.job_id)
        self.folder = folder
        self.backend = backend
        self.num_tasks = num_tasks
        self.markers = JobMarkers(folder, self.job_id)

    def __repr__(self) -> str:
        return f"Job({self.job_id!r}, backend={self.backend!r})"

    # --- state ---------------------------------------------------------------------------------------------

    def info(self) -> SacctRow | None:
        """The job's accounting row (Slurm only)."""
        rows = [r for r in sacct([self.job_id]) if r.job_id == self.job_id]
        return rows[0] if rows else None

    @property
    def state(self) -> JobState:
        started = self.markers.started() is not None
        if self.backend == "local":
            return self._local_state(started)
        row = self.info()
        if row is None:  # submitted, not yet in accounting
            return JobState.QUEUED
        if slurm_base_state(row.slurm_state) in MAY_RUN_AGAIN:
            # Accounting's latest row can be a node failure or requeue that slurmctld has already turned into
            # the next run: slurmctld's word decides while it still holds the job.
            live = controller_state(self.job_id)
            if live is not None and not from_slurm(live).is_terminal:
                return from_slurm(live, started=started, requeued=True)
        return from_slurm(row.slurm_state, started=started)

    def _local_state(self, started: bool) -> JobState:
        raw = self._job.state
        if raw == "RUNNING":
            return JobState.RUNNING if started else JobState.LAUNCHING
        if raw == "INTERRUPTED":
            return JobState.CANCELLED
        codes = self.markers.exit_codes()
        if raw == "FINISHED" and len(codes) == self.num_tasks and all(code == 0 for *_, code in codes):
            return JobState.SUCCEEDED
        return JobState.FAILED

    @property
    def exit_code(self) -> int | None:
        """The first failing rank's trainer exit code; else Slurm's; None while running."""
        failure = self.markers.first_failure()
        if failure is not None:
            return failure[1]
        if self.backend == "local":
            codes = self.markers.exit_codes()
            return 0 if codes and len(codes) == self.num_tasks else None
        row = self.info()
        return row.exit_code if row is not None and row.state.is_terminal else None

    @property
    def restarts(self) -> int:
        """How often Slurm requeued the job (preemption or time-out), as the ranks saw it."""
        started = self.markers.started()
        return int(started["restart"]) if started else 0

    def wait(self, timeout_s: float = 3600.0, poll_s: float = 1.0) -> JobState:
        """Block until the job ends; raise TimeoutError after ``timeout_s``. Polls back off to 10 s."""
        deadline = time.monotonic() + timeout_s
        delay = poll_s
        while True:
            state = self.state
            if state.is_terminal and (self.backend == "local" or self._settled()):
                return state
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {self.job_id} still {state.value} after {timeout_s:.0f} s")
            time.sleep(delay)
            delay = min(delay * 1.5, 10.0)

    def _settled(self) -> bool:
        row = self.info()
        return row is not None and row.settled

    def cancel(self) -> None:
        if self.backend == "local":
            self._job.cancel(check=False)
            return
        scancel([self.job_id])

    def result(self, timeout_s: float = 3600.0) -> dict[str, Any]:
        """Rank 0's result once the job succeeded; otherwise raise :class:`JobFailedError`."""
        state = self.wait(timeout_s)
        if state is not JobState.SUCCEEDED:
            failure = self.markers.first_failure()
            detail = f"rank {failure[0]} failed first" if failure else ""
            raise JobFailedError(self, state, self.exit_code, detail)
        outcome, value = pickle_load(self._job.paths.result_pickle)
        if outcome != "success":
            raise JobFailedError(self, JobState.FAILED, self.exit_code, str(value))
        return value  # type: ignore[no-any-return]

    # --- logs ----------------------------------------------------------------------------------------------

    def stdout(self, rank: int = 0) -> Path:
        return self._task_paths(rank).stdout

    def stderr(self, rank: int = 0) -> Path:
        return self._task_paths(rank).stderr

    def _task_paths(self, rank: int) -> submitit.core.utils.JobPaths:
        if not 0 <= rank < self.num_tasks:
            raise ValueError(f"rank {rank} outside 0..{self.num_tasks - 1}")
        return submitit.core.utils.JobPaths(self.folder, job_id=self.job_id, task_id=rank)
