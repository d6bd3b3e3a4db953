"""A function job submitted through the gateway (``Client.submit_function``), with the same handle as
``launchers.Executor``'s jobs: ``result``, ``results``, ``exception``, ``state``, ``cancel``, ``stdout``.

The outcomes come back as the ranks' own bytes (``GET /v1/jobs/{id}/outcome``) and are unpickled here, by the
caller who sent the function, never by the gateway."""

from __future__ import annotations

from typing import Any, Protocol

from gateway.schemas import JobPublic, LogTail
from launchers.outcomes import OutcomeResults, load_outcome
from launchers.states import JobState


class FunctionClient(Protocol):
    """What the handle needs of ``gateway.client.Client``."""

    def job(self, job_id: str) -> JobPublic: ...
    def wait(self, job_id: str, *, timeout_s: float = ...) -> JobPublic: ...
    def cancel(self, job_id: str) -> JobPublic: ...
    def logs(self, job_id: str, *, rank: int | None = None, lines: int = ...) -> list[LogTail]: ...
    def outcome(self, job_id: str, rank: int = 0) -> bytes | None: ...


class RemoteFunctionJob(OutcomeResults):
    def __init__(self, client: FunctionClient, job: JobPublic) -> None:
        self._client = client
        self._job_id = job.id
        self._ranks = job.resources.nodes * job.resources.tasks_per_node

    @property
    def job_id(self) -> str:
        return self._job_id

    @property
    def ranks(self) -> int:
        return self._ranks

    def __repr__(self) -> str:
        return f"RemoteFunctionJob({self.job_id!r})"

    @property
    def state(self) -> JobState:
        return self._client.job(self.job_id).state

    def done(self) -> bool:
        return self.state.is_terminal

    def wait(self, timeout_s: float = 3600.0) -> JobState:
        return self._client.wait(self.job_id, timeout_s=timeout_s).state

    def cancel(self) -> None:
        self._client.cancel(self.job_id)

    def stdout(self, rank: int = 0, lines: int = 10_000) -> str:
        return "\n".join(self._client.logs(self.job_id, rank=rank, lines=lines)[0].lines)

    def _settle(self, timeout_s: float) -> tuple[JobState, int | None]:
        job = self._client.wait(self.job_id, timeout_s=timeout_s)
        return job.state, job.exit_code

    def _outcome(self, rank: int) -> dict[str, Any] | None:
        data = self._client.outcome(self.job_id, rank)
        return load_outcome(data) if data is not None else None
