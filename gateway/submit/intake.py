"""Accepting submissions in groups: one writer thread per API process commits, in one transaction, every job
request that arrived while the last transaction ran (group commit).

Why: a POST's own work is a few indexed reads and two inserts, but each transaction costs its connection
checkout, BEGIN, COMMIT and a thread hop; at 16 concurrent clients those fixed costs, paid once per request,
made the gateway 4x slower than slurmrestd (issue 13). Here they are paid once per group. The request's
handler stays on the event loop and only waits for its own outcome: a job is answered 201 once its row is
committed, exactly as before. Each request keeps its own outcome: one request's error (an unknown algorithm,
a full backlog) never fails another's.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from gateway.config import GatewayConfig
from gateway.errors import GatewayError
from gateway.schemas import JobCreate, JobPublic
from gateway.site.auth import Principal
from gateway.store import rows
from gateway.submit.admission import check_backlog
from gateway.submit.job_requests import check_request, job_values, resolve_team, to_public
from launchers.slurm.sinfo import PartitionSize

log = logging.getLogger(__name__)
MAX_GROUP = 1000  # requests in one transaction at most; a batch request of more is its own group


@dataclass
class Submission:
    """One job request, as the API received it (checked in ``accept``, in the writer's transaction)."""

    principal: Principal
    request: JobCreate
    partition_sizes: dict[str, PartitionSize]
    rerun_of: str | None = None
    verify: bool = False


@dataclass
class Accepted:
    """A stored job as the API shows it: ``created`` now, or made earlier by the same idempotency key. Built from
    the values inserted (or the row read back), never as an ORM object: 250 us each, a group's largest cost."""

    job: JobPublic
    created: bool


Outcome = Accepted | Exception  # a GatewayError for the request's own fault; a database's error as raised


@dataclass
class _Group:
    """What one transaction decides: versions and backlogs read once per group, keys seen in it."""

    versions: dict[tuple[str, str, str | None], rows.Version] = field(default_factory=dict)
    backlogs: dict[str, int] = field(default_factory=dict)
    keys: dict[tuple[str, str, str], Accepted] = field(default_factory=dict)
    new: list[dict[str, Any]] = field(default_factory=list)


def accept(connection: Connection, config: GatewayConfig, items: Sequence[Submission]) -> list[Outcome]:
    """Check and insert ``items`` in the caller's transaction (not committed here): one outcome per item, in
    order. The checks and their order are the single-request ones: the team, the idempotency key, then what
    the request names, then the team's backlog."""
    group = _Group()
    outcomes: list[Outcome] = []
    for item in items:
        try:
            outcomes.append(_accept_one(connection, config, item, group))
        except GatewayError as exc:  # this request's own fault: the others go on
            outcomes.append(exc)
    rows.insert_jobs(connection, group.new)
    return outcomes


def _accept_one(connection: Connection, config: GatewayConfig, item: Submission, group: _Group) -> Accepted:
    request, user = item.request, item.principal.user
    team_name, _ = resolve_team(config, item.principal, request.team)
    key = (team_name, user, request.idempotency_key) if request.idempotency_key else None
    if key is not None:
        earlier = group.keys.get(key) or _stored(connection, *key)
        if earlier is not None:
            return Accepted(earlier.job, created=False)
    version, partition = check_request(connection, config, team_name, request, item.partition_sizes, group.versions)
    waiting = group.backlogs.get(team_name)
    if waiting is None:
        waiting = rows.backlog(connection, team_name)
    check_backlog(config, team_name, waiting)
    group.backlogs[team_name] = waiting + 1
    values = job_values(config, team_name, user, request, version, partition, rerun_of=item.rerun_of)
    values["verify"] = item.verify
    group.new.append(values)
    accepted = Accepted(to_public(values), created=True)
    if key is not None:
        group.keys[key] = accepted
    return accepted


def _stored(connection: Connection, team: str, user: str, key: str) -> Accepted | None:
    job_id = rows.idempotent_id(connection, team, user, key)
    if job_id is None:
        return None
    row = connection.execute(select(rows.JOB).where(rows.JOB.c.id == job_id)).one()
    return Accepted(to_public(dict(row._mapping)), created=False)


def create_job(
    session: Session,
    config: GatewayConfig,
    principal: Principal,
    request: JobCreate,
    partition_sizes: dict[str, PartitionSize],
    rerun_of: str | None = None,
    verify: bool = False,
) -> tuple[JobPublic, bool]:
    """One request, in the caller's session (reruns, tests): the group's checks and rows, committed here.
    Returns (job, created)."""
    [outcome] = accept(
        session.connection(), config, [Submission(principal, request, partition_sizes, rerun_of, verify)]
    )
    if isinstance(outcome, Exception):
        session.rollback()
        raise outcome
    session.commit()
    return outcome.job, outcome.created


class Intake:
    """The API process's writer thread, whose ``submit`` the request handlers await."""

    def __init__(self, engine: Engine, config: GatewayConfig) -> None:
        self.engine, self.config = engine, config
        self._queue: queue.SimpleQueue[_Waiting | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="intake", daemon=True)
        self.groups = 0  # transactions committed, and the requests they carried (tests/gateway/test_intake.py)
        self.submissions = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    async def submit(self, items: list[Submission]) -> list[Outcome]:
        loop = asyncio.get_running_loop()
        waiting = _Waiting(items, loop, loop.create_future())
        self._queue.put(waiting)
        return await waiting.future

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            group = [first]
            size = len(first.items)
            while size < MAX_GROUP:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)  # stop once this group is answered
                    break
                group.append(more)
                size += len(more.items)
            try:
                self._commit(group)
            except Exception as exc:  # a bug here must not leave every later request waiting forever
                log.exception("the intake failed on a group of %d requests", len(group))
                for waiting in group:
                    outcomes: list[Outcome] = [exc] * len(waiting.items)
                    waiting.loop.call_soon_threadsafe(_settle, waiting.future, outcomes)

    def _commit(self, group: list[_Waiting]) -> None:
        items = [item for waiting in group for item in waiting.items]
        outcomes = self._store(items)
        self.groups += 1
        self.submissions += len(items)
        start = 0
        for waiting in group:
            end = start + len(waiting.items)
            waiting.loop.call_soon_threadsafe(_settle, waiting.future, outcomes[start:end])
            start = end

    def _store(self, items: list[Submission], retried: bool = False) -> list[Outcome]:
        try:
            with self.engine.begin() as connection:
                return accept(connection, self.config, items)
        except IntegrityError as exc:
            if len(items) > 1:
                # Another process stored one of these idempotency keys between our read and our insert: each
                # request again on its own, where the key's owner is found and answered.
                return [outcome for item in items for outcome in self._store([item])]
            if not retried:
                return self._store(items, retried=True)
            log.error("a submission broke a constraint twice: %s", exc)
            return [exc]
        except Exception as exc:  # the database failed: every waiting request hears of it, none hangs
            log.warning("could not store %d submissions: %s", len(items), exc)
            return [exc] * len(items)


@dataclass
class _Waiting:
    items: list[Submission]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[list[Outcome]]


def _settle(future: asyncio.Future[list[Outcome]], outcomes: list[Outcome]) -> None:
    if not future.cancelled():  # a client that went away: its jobs are stored all the same, as its key finds
        future.set_result(outcomes)
