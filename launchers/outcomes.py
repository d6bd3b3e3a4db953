"""Reading a function job's per-rank outcomes back, on the submitting side: values, or the failing rank's own
exception re-raised with its remote traceback (the way ``concurrent.futures`` shows a worker's).

The outcome files are the job's own (written by its user's ranks, launchers.runtime.function); only the
submitter, who sent the function, unpickles them. The gateway hands them over as bytes and never does.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

import cloudpickle

from launchers.states import JobState


class RemoteTraceback(Exception):  # noqa: N818 - concurrent.futures names it so; it is a cause, not an error
    """The traceback of the rank that raised, as the cause of the exception raised here."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return "\n" + self.text.rstrip()


class FunctionFailedError(RuntimeError):
    """The function's job ended without an exception to re-raise: cancelled, timed out, killed, out of memory,
    or an exception or value that could not be pickled. Carries the job's state and the failing rank's code."""

    def __init__(self, job_id: str, state: JobState, rank: int | None, exit_code: int | None, detail: str = "") -> None:
        self.job_id, self.state, self.rank, self.exit_code = job_id, state, rank, exit_code
        where = f" on rank {rank}" if rank is not None else ""
        text = f"job {job_id} {state.value}{where} (exit code {exit_code})"
        super().__init__(text + (f": {detail}" if detail else ""))


def load_outcome(data: bytes) -> dict[str, Any]:
    outcome = cloudpickle.loads(data)
    if not isinstance(outcome, dict) or "ok" not in outcome:
        raise ValueError("not a function outcome")
    return outcome


def raise_failure(
    job_id: str, state: JobState, outcome: Mapping[str, Any] | None, rank: int | None, code: int | None
) -> BaseException:
    """The exception ``result()`` raises for a failed job: the rank's own, when it travelled back."""
    if outcome is not None:
        rank = int(outcome.get("rank", rank if rank is not None else -1))
        code = outcome.get("exit_code", code)
        error = outcome.get("error")
        if isinstance(error, BaseException):
            error.__cause__ = RemoteTraceback(str(outcome.get("traceback", "")))
            error.add_note(f"raised on rank {rank} of job {job_id} ({outcome.get('host', '?')}), exit code {code}")
            for name, value in (("rank", rank), ("exit_code", code), ("job_id", job_id)):
                try:
                    setattr(error, name, value)
                except AttributeError:
                    pass
            return error
        detail = outcome.get("traceback") or (
            f"{outcome.get('error_type')}: {outcome.get('error_message')} (the exception could not be pickled)"
        )
        return FunctionFailedError(job_id, state, rank, code, str(detail).strip())
    return FunctionFailedError(job_id, state, rank, code)


def value_of(job_id: str, state: JobState, outcome: Mapping[str, Any]) -> Any:
    """A succeeded rank's return value; a value that could not be pickled is an error of its own."""
    if outcome.get("ok"):
        return outcome.get("value")
    raise raise_failure(job_id, state, outcome, outcome.get("rank"), outcome.get("exit_code"))


class OutcomeResults(ABC):
    """``result``, ``results`` and ``exception`` over the ranks' outcomes, for a handle that can wait for its job
    and read one rank's outcome (on the shared filesystem, or through the gateway)."""

    @property
    @abstractmethod
    def job_id(self) -> str: ...

    @property
    @abstractmethod
    def ranks(self) -> int: ...

    @abstractmethod
    def _settle(self, timeout_s: float) -> tuple[JobState, int | None]:
        """Wait for the end: (the job's state, its exit code)."""

    @abstractmethod
    def _outcome(self, rank: int) -> dict[str, Any] | None: ...

    def result(self, timeout_s: float = 3600.0) -> Any:
        """Rank 0's return value; raises the failing rank's own exception (or :class:`FunctionFailedError`)."""
        return self.results(timeout_s)[0]

    def results(self, timeout_s: float = 3600.0) -> list[Any]:
        """Every rank's return value, in rank order."""
        values, error = self._collect(timeout_s)
        if error is not None:
            raise error
        return values

    def exception(self, timeout_s: float = 3600.0) -> BaseException | None:
        """What ``result()`` would raise, or None once the job succeeded."""
        return self._collect(timeout_s)[1]

    def _collect(self, timeout_s: float) -> tuple[list[Any], BaseException | None]:
        state, code = self._settle(timeout_s)
        if state is not JobState.SUCCEEDED:
            # The rank that raised left an outcome; Slurm stopped the others (--kill-on-bad-exit).
            for rank in range(self.ranks):
                outcome = self._outcome(rank)
                if outcome is not None and not outcome.get("ok"):
                    return [], raise_failure(self.job_id, state, outcome, rank, code)
            return [], raise_failure(self.job_id, state, None, None, code)
        values = []
        for rank in range(self.ranks):
            outcome = self._outcome(rank) or {"ok": False, "rank": rank, "traceback": "the rank left no outcome"}
            try:
                values.append(value_of(self.job_id, state, outcome))
            except Exception as exc:
                return [], exc
        return values, None
