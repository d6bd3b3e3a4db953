"""A fake Slurm behind the project's one command seam (``launchers.slurm.shell.run``), for worker tests that
need no cluster: an in-memory model of jobs that answers sbatch, sacct, squeue, scontrol, sinfo and scancel in
the formats the real commands print (see slurmtext), records every argv, and fails on request.

Tests move jobs through their lives with ``start``, ``finish``, ``settle``, ``pend``, ``forget``, ``requeue``.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import submitit

from launchers import submission
from launchers.slurm import commands, sacct, scontrol, shell, squeue
from launchers.slurm.ids import master_id
from launchers.slurm.shell import CommandError, CommandNotFoundError, CommandTimeoutError
from tests.worker import slurmtext
from tests.worker.slurmtext import FakeJob, Run

# Every module-level name ``run`` the worker's path reaches (``from launchers.slurm.shell import run``).
PATCHED_MODULES = (shell, commands, submission)

UNREACHABLE = "Unable to contact slurm controller (connect failure)"
REFUSED = "Invalid account or account/partition combination specified"
SUBMIT_LIMIT = "Job violates accounting/QOS policy (job submit limit, user's size and/or time limits)"
FAILURES = {  # kind -> (exception class, exit code, stderr: {cmd} the command, {what} sbatch's prefix)
    "unreachable": (CommandError, 1, "{cmd}: error: {what}" + UNREACHABLE),
    "refused": (CommandError, 1, "{cmd}: error: {what}" + REFUSED),
    "timeout": (CommandTimeoutError, 124, "\ntimed out after 60 s"),
    "missing": (CommandNotFoundError, 127, "[Errno 2] No such file or directory: '{cmd}'"),
    "submit_limit": (CommandError, 1, "{cmd}: error: {what}" + SUBMIT_LIMIT),
    "down": (CommandError, 1, "{cmd}: error: Problem talking to the database: Connection refused"),
}
SBATCH_UNREACHABLE = "sbatch: error: Batch job submission failed: " + UNREACHABLE


class Crash(BaseException):
    """Raised inside sbatch after Slurm took the job: the gateway "dies" before it records the Slurm id."""


@dataclass
class Failure:
    kind: str
    times: int | None  # None: until healed
    stderr: str | None = None


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


class FakeSlurm:
    def __init__(self, partitions: Sequence[str] = ("team-a", "team-b"), first_id: int = 100) -> None:
        self.partitions = list(partitions)
        self.nodes = {"n1": "idle", "n2": "idle", "n3": "idle"}
        self.max_array_size = 1001
        self.jobs: dict[str, FakeJob] = {}
        self.calls: list[tuple[str, ...]] = []
        self.run_as: list[tuple[str, str | None]] = []  # (command, the user it ran as through sudo)
        self.scripts: dict[str, str] = {}  # job id (an array's own id) -> the script sbatch was given
        self.on_sbatch: Callable[[tuple[str, ...], dict[str, str]], None] | None = None
        self.crash_after_sbatch = False
        self._next = first_id
        self._failures: dict[str, Failure] = {}
        # array id -> (its pending elements as accounting still prints them, whether that row comes first)
        self._stale_ranges: dict[str, tuple[list[FakeJob], bool]] = {}
        self._as_user: str | None = None  # the user the command being answered runs as (sudo)

    # --- installing --------------------------------------------------------------------------------------

    def install(self, monkeypatch: pytest.MonkeyPatch) -> FakeSlurm:
        for module in PATCHED_MODULES:
            monkeypatch.setattr(module, "run", self)
        # submitit refuses to build a Slurm executor where there is no srun; the fake is the cluster here.
        monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 2))
        return self

    # --- what tests read ---------------------------------------------------------------------------------

    def calls_of(self, *prefix: str) -> list[tuple[str, ...]]:
        return [argv for argv in self.calls if argv[: len(prefix)] == prefix]

    def count(self, *prefix: str) -> int:
        return len(self.calls_of(*prefix))

    def sacct_queries(self) -> list[str]:
        """The ``-j`` argument of every job query (not the comment look-ups)."""
        return [argv[argv.index("-j") + 1] for argv in self.calls_of("sacct") if "-j" in argv]

    def elements(self, array_id: str) -> list[FakeJob]:
        return sorted((j for j in self.jobs.values() if j.array_id == array_id), key=lambda j: j.array_index or 0)

    def job(self, job_id: str) -> FakeJob:
        return self.jobs[job_id]

    # --- failures ----------------------------------------------------------------------------------------

    def fail(self, command: str, kind: str, times: int | None = None, stderr: str | None = None) -> None:
        """Make ``command`` (``sbatch``, ``sacct``, ``scontrol``, ...) fail ``times`` times (None: until healed)."""
        assert kind in FAILURES, kind
        self._failures[command] = Failure(kind, times, stderr)

    def heal(self, command: str | None = None) -> None:
        if command is None:
            self._failures.clear()
        else:
            self._failures.pop(command, None)

    def _maybe_fail(self, argv: tuple[str, ...], check: bool) -> subprocess.CompletedProcess[str] | None:
        failure = self._failures.get(argv[0])
        if failure is None:
            return None
        if failure.times is not None:
            failure.times -= 1
            if failure.times <= 0:
                del self._failures[argv[0]]
        cls, code, stderr = FAILURES[failure.kind]
        text = (
            failure.stderr
            if failure.stderr is not None
            else stderr.format(cmd=argv[0], what="Batch job submission failed: " if argv[0] == "sbatch" else "")
        )
        if check or cls is not CommandError:  # a missing command or a time-out raises whatever check says
            raise cls(argv, code, "", text)
        return subprocess.CompletedProcess(list(argv), code, "", text)

    # --- the seam ----------------------------------------------------------------------------------------

    def __call__(
        self,
        argv: Sequence[str],
        *,
        timeout_s: float | None = None,
        env: Any = None,
        input_text: str | None = None,
        check: bool = True,
        cwd: Any = None,
        as_user: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        args = tuple(str(a) for a in argv)
        self.calls.append(args)
        self.run_as.append((args[0], as_user))
        failed = self._maybe_fail(args, check)
        if failed is not None:
            return failed
        handler = {
            "sbatch": self._sbatch,
            "sacct": self._sacct,
            "squeue": self._squeue,
            "scontrol": self._scontrol,
            "sinfo": self._sinfo,
            "scancel": self._scancel,
        }.get(args[0])
        if handler is None:
            raise CommandNotFoundError(args, 127, "", f"[Errno 2] No such file or directory: {args[0]!r}")
        self._as_user = as_user
        code, out, err = handler(args)
        if check and code != 0:
            raise CommandError(args, code, out, err)
        return subprocess.CompletedProcess(list(args), code, out, err)

    # --- commands ----------------------------------------------------------------------------------------

    def _sbatch(self, argv: tuple[str, ...]) -> tuple[int, str, str]:
        script = Path(argv[-1]).read_text()
        options = parse_sbatch(script, argv[1:-1])
        if self.on_sbatch is not None:
            self.on_sbatch(argv, options)
        job_id = self.submit(
            comment=options.get("comment", ""),
            partition=options.get("partition", self.partitions[0]),
            account=options.get("account", "root"),
            name=options.get("job-name", "sbatch"),
            nodes=int(options.get("nodes", "1")),
            time_limit_min=int(options.get("time", "60")),
            array=options.get("array"),
            user=self._as_user or "root",
        )
        self.scripts[job_id] = script
        if self.crash_after_sbatch:
            raise Crash(job_id)
        return 0, (f"{job_id}\n" if "--parsable" in argv else f"Submitted batch job {job_id}\n"), ""

    def _sacct(self, argv: tuple[str, ...]) -> tuple[int, str, str]:
        delimiter = sacct.delimiter_of(argv)
        if "-j" not in argv:  # comments_argv: every job of the last week
            return 0, slurmtext.sacct_comments(self._accounting(), delimiter), ""
        wanted = set(argv[argv.index("-j") + 1].split(","))
        rows = [j for j in self._accounting() if j.job_id in wanted or master_id(j.job_id) in wanted]
        text = slurmtext.sacct_rows(rows, now(), attempts="-D" in argv, delimiter=delimiter)
        for array_id, (copies, first) in self._stale_ranges.items():
            if array_id in wanted:
                stale = slurmtext.sacct_rows(copies, now(), attempts="-D" in argv, delimiter=delimiter)
                text = stale + text if first else text + stale
        return 0, text, ""

    def _squeue(self, argv: tuple[str, ...]) -> tuple[int, str, str]:
        held = self._controller()
        pending = squeue.pending_argv("")
        if argv[: len(pending) - 1] == tuple(pending[:-1]) and len(argv) == len(pending):
            delimiter = argv[-1].removeprefix("%i").partition("%r")[0]
            return 0, slurmtext.squeue_pending(held, delimiter), ""
        if list(argv) == squeue.JSON_ARGV:
            return 0, slurmtext.squeue_json(held), ""
        if list(argv) == squeue.IDS_ARGV:
            return 0, slurmtext.squeue_ids(held), ""
        raise AssertionError(f"the fake does not know squeue {argv[1:]}")

    def _scontrol(self, argv: tuple[str, ...]) -> tuple[int, str, str]:
        if list(argv) == scontrol.SHOW_CONFIG_ARGV:
            return 0, slurmtext.show_config(self.max_array_size), ""
        if argv[1] in ("requeuehold", "release") and len(argv) == 3:
            if argv[1] == "requeuehold":
                self.requeue(argv[2], "REQUEUED")
            return 0, "", ""
        if argv[1] == "update" and len(argv) == 4 and argv[3].startswith("ExcNodeList="):
            for job in self._each(argv[2].removeprefix("JobId=")):
                job.excluded = argv[3].split("=", 1)[1]
            return 0, "", ""
        raise AssertionError(f"the fake does not know scontrol {argv[1:]}")

    def _sinfo(self, argv: tuple[str, ...]) -> tuple[int, str, str]:
        only = argv[argv.index("-p") + 1] if "-p" in argv else None
        return 0, slurmtext.sinfo_rows(self.nodes, self.partitions, only), ""

    def _scancel(self, argv: tuple[str, ...]) -> tuple[int, str, str]:
        for given in argv[1:]:
            for job in [j for j in self._controller() if given in (j.job_id, j.array_id)]:
                if not job.ended:
                    self.finish(job.job_id, "CANCELLED")
        return 0, "", ""

    def _accounting(self) -> list[FakeJob]:
        return [j for j in self._ordered() if j.in_accounting]

    def _controller(self) -> list[FakeJob]:
        return [j for j in self._ordered() if j.in_controller]

    def _ordered(self) -> list[FakeJob]:
        return sorted(self.jobs.values(), key=lambda j: (int(master_id(j.job_id)), j.array_index or 0))

    # --- the model: what tests do to jobs ----------------------------------------------------------------

    def _new_id(self) -> str:
        self._next += 1
        return str(self._next - 1)

    def submit(
        self,
        *,
        comment: str = "",
        partition: str | None = None,
        account: str = "root",
        name: str = "wrap",
        nodes: int = 1,
        time_limit_min: int = 60,
        array: str | None = None,
        user: str = "root",
    ) -> str:
        """A job Slurm holds (as sbatch would create it, as ``user``); returns its id, an array's own id for
        arrays."""
        job_id, submitted = self._new_id(), now()

        def make(one: str, index: int | None = None, limit: int | None = None) -> FakeJob:
            return FakeJob(
                job_id=one,
                raw_id=job_id,
                name=name,
                comment=comment,
                partition=partition or self.partitions[0],
                account=account,
                nodes=nodes,
                time_limit_min=time_limit_min,
                submit=submitted,
                array_id=None if index is None else job_id,
                array_index=index,
                array_limit=limit,
                user=user,
            )

        if array is None:
            self.jobs[job_id] = make(job_id)
            return job_id
        indices, _, limit = array.partition("%")
        for index in expand_indices(indices):
            self.jobs[f"{job_id}_{index}"] = make(f"{job_id}_{index}", index, int(limit) if limit else None)
        return job_id

    def _each(self, job_id: str) -> list[FakeJob]:
        """A job, or every element of an array named by its own id."""
        return [self.jobs[job_id]] if job_id in self.jobs else self.elements(job_id)

    def start(self, job_id: str, node_list: str = "n1", at: datetime | None = None) -> None:
        for job in self._each(job_id):
            if job.array_id is not None and job.pending:
                # Slurm splits a starting element off the pending record under a number of its own; the last
                # element to leave keeps the array's own record (and id).
                if any(e.pending and e is not job for e in self.elements(job.array_id)):
                    job.raw_id = self._new_id()
            job.run.state, job.run.start, job.run.node_list, job.run.reason = "RUNNING", at or now(), node_list, "None"

    def finish(
        self,
        job_id: str,
        state: str = "COMPLETED",
        exit_code: int = 0,
        signal: int = 0,
        reason: str = "None",
        settled: bool = True,
    ) -> None:
        """End a job (``settled=False``: accounting shows the state but not yet the end time)."""
        for job in self._each(job_id):
            run = job.run
            run.state, run.exit_code, run.signal, run.reason, run.end = state, exit_code, signal, reason, now()
            if run.start is None and state not in ("CANCELLED",):
                run.start, run.node_list = run.end, run.node_list or "n1"
            job.settled = settled

    def settle(self, job_id: str) -> None:
        for job in self._each(job_id):
            job.settled = True

    def pend(self, job_id: str, reason: str, priority: int | None = None) -> None:
        for job in self._each(job_id):
            job.run.reason = reason
            if priority is not None:
                job.priority = priority

    def lag_pending_range(self, array_id: str, first: bool = False) -> None:
        """Accounting keeps printing the array's pending record as it is now while elements start and leave it,
        beside their own rows (slurmdbd updates the record's task list later than it records an element's start),
        until :meth:`catch_up`. ``first``: that stale row comes before the others."""
        pending = [replace(e, runs=[Run()], raw_id=array_id) for e in self.elements(array_id) if e.pending]
        self._stale_ranges[array_id] = (pending, first)

    def catch_up(self) -> None:
        self._stale_ranges.clear()

    def forget(self, job_id: str) -> None:
        """slurmctld drops the job (MinJobAge after its end); accounting keeps it."""
        for job in self._each(job_id):
            job.in_controller = False

    def requeue(self, job_id: str, state: str = "NODE_FAIL") -> None:
        """The current run ends in ``state`` and Slurm queues the same id again (``sacct -D`` shows both)."""
        for job in self._each(job_id):
            job.run.state, job.run.end = state, now()
            job.runs.append(Run(reason="BeginTime"))


def expand_indices(text: str) -> list[int]:
    indices: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        indices += range(int(low), int(high or low) + 1)
    return indices


def parse_sbatch(script: str, args: Sequence[str]) -> dict[str, str]:
    """``#SBATCH --key=value`` lines (sbatch reads them up to the first command), then the command line's
    options over them; a flag without a value reads as ``"true"``."""
    options: dict[str, str] = {}
    lines = []
    for line in script.splitlines()[1:]:
        if line.startswith("#SBATCH"):
            lines += shlex.split(line[len("#SBATCH") :])
        elif line.strip() and not line.startswith("#"):
            break
    for item in [*lines, *args]:
        if item.startswith("--"):
            key, sep, value = item[2:].partition("=")
            options[key] = value if sep else "true"
    return options
