"""A function job submitted through the gateway (``Client.submit_function``), with the same handle as
``launchers.Executor``'s jobs: ``result``, ``results``, ``exception``, ``state``, ``cancel``, ``stdout``.

The outcomes come back as the ranks' own bytes (``GET /v1/jobs/{id}/outcome``) and are unpickled here, by the
caller who sent the function, never by the gateway."""

from __future__ import annotations

from typing import Any, Protocol

from gateway.schemas import JobPublic, LogTail
from launchers.outcomes import load_outcome, raise_failure, value_of
from launchers.states import JobState


class FunctionClient(Protocol):
    """What the handle needs of ``gateway.client.Client``."""

    def job(self, job_id: str) -> JobPublic: ...
    def wait(self, job_id: str, *, timeout_s: float = ...) -> JobPublic: ...
    def cancel(self, job_id: str) -> JobPublic: ...
    def logs(self, job_id: str, *, rank: int | None = None, lines: int = ...) -> list[LogTail]: ...
    def outcome(self, job_id: str, rank: int = 0) -> bytes | None: ...


class RemoteFunctionJob:
    def __init__(self, client: FunctionClient, job: JobPublic) -> None:
        self._client = client
        self.job_id = job.id
        self.ranks = job.resources.nodes * job.resources.tasks_per_node

    def __repr__(self) -> str:
        return f"RemoteFunctionJob({self.job_id!r})"

    @property
    def state(self) -> JobState:
        return self._client.job(self.job_id).state

    def done(self) -> bool:
        return self.state.is_terminal

    def wait(self, timeout_s: float = 3600.0) -> JobPublic:
        return self._client.wait(self.job_id, timeout_s=timeout_s)

    def cancel(self) -> None:
        self._client.cancel(self.job_id)

    def stdout(self, rank: int = 0, lines: int = 10_000) -> str:
        return "\n".join(self._client.logs(self.job_id, rank=rank, lines=lines)[0].lines)

    def result(self, timeout_s: float = 3600.0) -> Any:
        """Rank 0's return value; raises the failing rank's own exception (or FunctionFailedError)."""
        return self.results(timeout_s)[0]

    def results(self, timeout_s: float = 3600.0) -> list[Any]:
        values, error = self._collect(timeout_s)
        if error is not None:
            raise error
        return values

    def exception(self, timeout_s: float = 3600.0) -> BaseException | None:
        return self._collect(timeout_s)[1]

    def _outcome(self, rank: int) -> dict[str, Any] | None:
        data = self._client.outcome(self.job_id, rank)
        return load_outcome(data) if data is not None else None

    def _collect(self, timeout_s: float) -> tuple[list[Any], BaseException | None]:
        job = self.wait(timeout_s)
        if job.state is not JobState.SUCCEEDED:
            # The rank that raised left an outcome; the others were stopped by Slurm (--kill-on-bad-exit).
            for rank in range(self.ranks):
                outcome = self._outcome(rank)
                if outcome is not None and not outcome.get("ok"):
                    return [], raise_failure(self.job_id, job.state, outcome, rank, job.exit_code)
            return [], raise_failure(self.job_id, job.state, None, None, job.exit_code)
        values = []
        for rank in range(self.ranks):
            outcome = self._outcome(rank) or {"ok": False, "rank": rank, "traceback": "rank left no outcome"}
            try:
                values.append(value_of(self.job_id, job.state, outcome))
            except Exception as exc:
                return [], exc
        return values, None
