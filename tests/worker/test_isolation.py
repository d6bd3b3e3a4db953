"""A bad record harms one record: one job's hostile files, or an apply that raises for one job, leave every
other job tracked to its end in the same cycles; the bad job carries a visible reason, /healthz and the stats
count it, and once the cause is gone it is tracked again (no cache left saying it was)."""

from __future__ import annotations

import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlmodel import Session

import gateway.worker.applier as applier
import gateway.worker.tracker as tracker
from gateway.store.db import make_engine, migrate
from gateway.store.models import Job
from gateway.worker.apply import Evidence, Transition, decide
from gateway.worker.loop import Worker
from gateway.worker.status import healthy
from launchers.states import JobState
from tests.gateway.conftest import make_config, postgres_url  # noqa: F401  (a fixture)
from tests.worker.conftest import Gateway, add_algorithm, teams
from tests.worker.fakeslurm import FakeSlurm

TERMINAL = {s.value for s in JobState if s.is_terminal}
HOSTILE_STARTED = {
    "restart-text": b'{"size": 1, "restart": "x"}',
    "restart-list": b'{"size": 1, "restart": [1]}',
    "restart-float": b'{"size": 1, "restart": 1e400}',
    "huge-number": b'{"size": 1, "restart": ' + b"9" * 5000 + b"}",
    "deep-brackets": b"[" * 100_000 + b"]" * 100_000,
    "not-an-object": b'["restart", 0]',
    "invalid-utf8": b'{"size": 1, "restart": 0, "time": "\xff\xfe"}',
}
HOSTILE_METRICS = {
    "huge-number": b'{"epoch": 1, "loss": ' + b"9" * 5000 + b"}\n",
    "deep-brackets": b'{"epoch": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n",
    "nan-and-bytes": b'{"epoch": 1, "loss": NaN, "acc": Infinity, "tag": "\xff\x00"}\n',
}


@pytest.fixture(params=["sqlite", "postgresql"])
def any_gateway(
    request: pytest.FixtureRequest, make_gateway: Callable[..., Gateway], fake: FakeSlurm, tmp_path: Path
) -> Iterator[Gateway]:
    """The worker's savepoints on both databases: pysqlite's transactions are not PostgreSQL's."""
    if request.param == "sqlite":
        yield make_gateway()
        return
    url = request.getfixturevalue("database_url_postgresql")
    engine = make_engine(url)
    migrate(engine)
    add_algorithm(engine)
    config = make_config(tmp_path, url, teams=teams())
    yield Gateway(config, engine, Worker(engine, config), fake)
    engine.dispose()


@pytest.fixture
def database_url_postgresql(postgres_url: str) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield postgres_url.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def three(any_gateway: Gateway, fake: FakeSlurm) -> tuple[Gateway, str, str, str]:
    """The bad job (team-a) and two good ones (team-a, team-b), all running with their start markers."""
    gw = any_gateway
    bad, good_a, good_b = gw.submit("team-a"), gw.submit("team-a"), gw.submit("team-b")
    gw.cycle()
    for job_id in (bad, good_a, good_b):
        fake.start(gw.slurm_id(job_id))
        gw.markers(job_id).write_started(size=1, restart=0)
    gw.cycle()
    assert {gw.state(j) for j in (bad, good_a, good_b)} == {"running"}
    return gw, bad, good_a, good_b


def finish_all(gw: Gateway, fake: FakeSlurm, *job_ids: str) -> None:
    for job_id in job_ids:
        fake.finish(gw.slurm_id(job_id), "COMPLETED")


@pytest.mark.parametrize("content", HOSTILE_STARTED.values(), ids=HOSTILE_STARTED.keys())
def test_a_hostile_start_marker_harms_only_its_job(
    three: tuple[Gateway, str, str, str], fake: FakeSlurm, content: bytes
) -> None:
    gw, bad, good_a, good_b = three
    gw.markers(bad).started_path.write_bytes(content)
    finish_all(gw, fake, bad, good_a, good_b)
    gw.cycle()
    assert (gw.state(good_a), gw.state(good_b)) == ("succeeded", "succeeded")  # in the same cycle
    job = gw.job(bad)
    assert job.state in TERMINAL or job.tracking_error  # its true end, or a reason the API shows


@pytest.mark.parametrize("content", HOSTILE_METRICS.values(), ids=HOSTILE_METRICS.keys())
def test_a_hostile_metrics_file_harms_only_its_job(
    three: tuple[Gateway, str, str, str], fake: FakeSlurm, content: bytes
) -> None:
    gw, bad, good_a, good_b = three
    for job_id in (bad, good_a):
        (Path(gw.job(job_id).folder) / "metrics.jsonl").write_bytes(b'{"epoch": 1, "loss": 0.5}\n')
    (Path(gw.job(bad).folder) / "metrics.jsonl").write_bytes(content)
    finish_all(gw, fake, bad, good_a, good_b)
    gw.cycle()
    assert (gw.state(good_a), gw.state(good_b)) == ("succeeded", "succeeded")
    assert gw.job(good_a).metrics == [{"epoch": 1, "loss": 0.5}]
    job = gw.job(bad)
    assert job.state in TERMINAL or job.tracking_error


def raising_for(job_id: str, real: Callable[..., Any], fixed: threading.Event) -> Callable[..., Any]:
    """``decide`` failing for one job until ``fixed`` (monkeypatch.undo would take the fake Slurm away too)."""

    def decide(job: Any, ev: Evidence, now: datetime) -> Transition:
        if job.id == job_id and not fixed.is_set():
            raise ValueError(f"cannot decide on {job_id}")
        return real(job, ev, now)  # type: ignore[no-any-return]

    return decide


def test_decide_raising_for_one_job_marks_it_and_lets_it_go_once_fixed(
    three: tuple[Gateway, str, str, str], fake: FakeSlurm, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw, bad, good_a, good_b = three
    fixed = threading.Event()
    monkeypatch.setattr(applier, "decide", raising_for(bad, decide, fixed))
    finish_all(gw, fake, bad, good_a, good_b)
    gw.cycle()
    assert (gw.state(good_a), gw.state(good_b), gw.state(bad)) == ("succeeded", "succeeded", "running")
    assert "cannot decide on" in (gw.job(bad).tracking_error or "")
    health = gw.worker.health(detailed=True)
    assert (health["jobs_failing"], health["tracking_failures"]) == (1, 1)
    assert bad in health["failing_jobs"] and not healthy(health)
    assert "failing_jobs" not in gw.worker.health()  # anyone's view: counts, no job ids
    gw.cycle()
    assert gw.worker.health()["tracking_failures"] == 2  # tried again every cycle
    fixed.set()
    gw.cycle()
    job = gw.job(bad)
    assert (job.state, job.tracking_error) == ("succeeded", None)
    assert gw.worker.health()["jobs_failing"] == 0 and gw.worker.tracking.failing == {}


def test_a_waiting_job_whose_decision_failed_is_decided_again(
    make_gateway: Callable[..., Gateway], fake: FakeSlurm, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The unchanged-state cache: a pending job Slurm says the same of is skipped, but only once the decision
    on it was committed; a failed one is decided again, not left as it was until the worker restarts."""
    gw = make_gateway()
    job_id = gw.submit("team-a")
    gw.cycle()
    fixed = threading.Event()
    monkeypatch.setattr(applier, "decide", raising_for(job_id, decide, fixed))
    fake.start(gw.slurm_id(job_id))
    fake.finish(gw.slurm_id(job_id), "FAILED", exit_code=3)
    gw.cycle(2)
    assert gw.state(job_id) == "queued" and gw.job(job_id).tracking_error
    fixed.set()
    gw.cycle()
    assert (gw.state(job_id), gw.job(job_id).tracking_error) == ("failed", None)


def test_a_row_the_database_refuses_fails_that_job_alone(
    three: tuple[Gateway, str, str, str], fake: FakeSlurm, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that fails only when flushed (here a value SQLite cannot bind): the chunk's savepoint is rolled
    back, its jobs applied again one by one, and the failing one marked; the others' writes are kept."""
    gw, bad, good_a, good_b = three
    real_write = tracker.Tracker.write
    calls: dict[str, int] = {}
    fixed = threading.Event()

    def write(self: tracker.Tracker, session: Any, job: Job, transition: Transition, staged: Any) -> bool:
        calls[job.id] = calls.get(job.id, 0) + 1
        changed = real_write(self, session, job, transition, staged)
        if job.id == bad and not fixed.is_set():
            job.reason = object()  # type: ignore[assignment]
            session.add(job)
        return changed

    monkeypatch.setattr(tracker.Tracker, "write", write)
    finish_all(gw, fake, bad, good_a, good_b)
    gw.cycle()
    assert (gw.state(good_a), gw.state(good_b), gw.state(bad)) == ("succeeded", "succeeded", "running")
    assert gw.job(bad).tracking_error and gw.worker.health()["jobs_failing"] == 1
    assert gw.worker.stats.failures_by_team == {}  # nothing counted for a write that was rolled back
    calls.clear()
    gw.cycle()
    assert calls == {bad: 1}  # the others are done; the failing job alone, once: not its chunk again
    fixed.set()
    gw.cycle()
    assert gw.state(bad) in TERMINAL and gw.job(bad).tracking_error is None


def test_a_failing_job_costs_the_others_one_pass_once(
    make_gateway: Callable[..., Gateway], fake: FakeSlurm, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = make_gateway({"team_a": {"max_running_jobs": 20}})
    ids = [gw.submit("team-a") for _ in range(10)]
    gw.cycle()
    for job_id in ids:
        fake.start(gw.slurm_id(job_id))
    real_apply = tracker.Tracker.apply
    applied: list[str] = []

    def apply(self: tracker.Tracker, session: Any, job: Job, *args: Any) -> bool:
        applied.append(job.id)
        changed = real_apply(self, session, job, *args)
        if job.id == ids[3]:
            job.reason = object()  # type: ignore[assignment]  # refused at the flush
        return changed

    monkeypatch.setattr(tracker.Tracker, "apply", apply)
    gw.cycle()
    assert len(applied) == 20  # the chunk, then each job alone to find the bad one
    applied.clear()
    gw.cycle(3)
    assert len(applied) == 30  # then one pass a cycle: the bad job alone, the others together
    assert {gw.state(j) for j in ids if j != ids[3]} == {"launching"}


def test_a_failed_cycle_shows_in_healthz_and_its_caches_are_dropped(
    gw: Gateway, fake: FakeSlurm, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = gw.submit("team-a")
    gw.cycle()
    failing = threading.Event()
    failing.set()
    real_commit = Session.commit

    def commit(session: Any) -> None:
        if failing.is_set() and sys._getframe(1).f_code.co_name == "poll":
            raise RuntimeError("the database went away")
        real_commit(session)

    monkeypatch.setattr(Session, "commit", commit)
    fake.start(gw.slurm_id(job_id))
    fake.finish(gw.slurm_id(job_id), "COMPLETED")
    for _ in running_worker(gw):
        if gw.worker.stats.cycle_failures:
            break
    health = gw.worker.health(detailed=True)
    assert health["last_cycle_failed"] and not healthy(health)
    assert "the database went away" in (health["last_cycle_error"] or "")
    assert "last_cycle_error" not in gw.worker.health()
    assert gw.state(job_id) == "queued"
    failing.clear()
    for _ in running_worker(gw):
        if gw.state(job_id) in TERMINAL:
            break
    assert not gw.worker.health()["last_cycle_failed"]


def running_worker(gw: Gateway, timeout_s: float = 20.0) -> Iterator[None]:
    """The worker's own thread (its loop catches what a cycle throws), polled until the caller breaks."""
    gw.worker._stop.clear()
    gw.worker.start()
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            yield
            time.sleep(0.05)
        raise AssertionError("not reached in time")
    finally:
        gw.worker.stop()


def test_a_request_writing_while_the_worker_applies_is_no_jobs_fault(
    gw: Gateway, fake: FakeSlurm, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite: an API request commits while the poll is deciding. The poll's transaction holds the write lock
    from its start, so the request waits for it (the busy timeout) instead of making the poll's first write
    fail at once with "database is locked", which once marked every job of a cycle as failing (CI, the contract
    test with schemathesis writing while jobs ran)."""
    job_id, other = gw.submit("team-a"), gw.submit("team-a")
    gw.cycle()
    fake.start(gw.slurm_id(job_id))
    fake.finish(gw.slurm_id(job_id), "COMPLETED")
    wrote: list[str] = []

    def request() -> None:  # a connection of its own, as an API thread has
        with gw.engine.connect() as connection:
            connection.execute(text("UPDATE job SET name = 'renamed' WHERE id = :id"), {"id": other})
            connection.commit()
            wrote.append(other)

    requests: list[threading.Thread] = []

    def deciding(job: Any, ev: Evidence, now: datetime) -> Transition:
        if not requests:
            requests.append(threading.Thread(target=request))
            requests[0].start()
            requests[0].join(timeout=1.0)  # given the time to commit, were it let through
        return decide(job, ev, now)

    monkeypatch.setattr(applier, "decide", deciding)
    gw.cycle()
    requests[0].join(timeout=30)
    assert (gw.state(job_id), gw.job(job_id).tracking_error) == ("succeeded", None)
    assert gw.worker.stats.tracking_failures == 0 and gw.worker.stats.cycle_failures == 0
    assert wrote == [other] and gw.job(other).name == "renamed"  # the request waited, and then it wrote


def test_the_database_failing_fails_the_cycle_not_a_job(
    three: tuple[Gateway, str, str, str], fake: FakeSlurm, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An OperationalError (a lock, a lost connection) is the database's, whichever job's write met it: marking
    that job would leave a reason on it that says nothing about the job."""
    from sqlalchemy.exc import OperationalError

    gw, bad, good_a, good_b = three

    def decide_failing(job: Any, ev: Evidence, now: datetime) -> Transition:
        raise OperationalError("UPDATE job", {}, Exception("database is locked"))

    monkeypatch.setattr(applier, "decide", decide_failing)
    finish_all(gw, fake, bad, good_a, good_b)
    with pytest.raises(OperationalError):
        gw.cycle()
    assert gw.worker.stats.tracking_failures == 0
    assert all(gw.job(j).tracking_error is None for j in (bad, good_a, good_b))
    monkeypatch.setattr(applier, "decide", decide)
    gw.cycle()
    assert {gw.state(j) for j in (bad, good_a, good_b)} == {"succeeded"}
