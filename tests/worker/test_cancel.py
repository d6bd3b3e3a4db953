"""Cancellation: asked over HTTP, carried out by the worker with one scancel for every job that asked."""

from __future__ import annotations

from sqlmodel import Session

from gateway.store.models import Job
from gateway.submit.job_requests import request_cancel
from tests.worker.conftest import Gateway
from tests.worker.fakeslurm import FakeSlurm


def ask_cancel(gw: Gateway, job_id: str) -> None:
    with Session(gw.engine, expire_on_commit=False) as session:
        job = session.get(Job, job_id)
        assert job is not None
        request_cancel(session, job, by="user-team-a")
        session.commit()


def test_every_cancellation_asked_for_goes_out_in_one_scancel(gw: Gateway, fake: FakeSlurm) -> None:
    first, second = gw.submit(), gw.submit()
    other = gw.submit("team-b")
    gw.cycle()
    fake.start(gw.slurm_id(first))
    gw.cycle()
    ask_cancel(gw, first)
    ask_cancel(gw, second)
    assert gw.job(first).cancel_requested and gw.state(first) == "launching"

    gw.cycle()
    assert fake.calls_of("scancel") == [("scancel", gw.slurm_id(first), gw.slurm_id(second))]
    for job_id in (first, second):
        job = gw.job(job_id)
        assert (job.state, job.cancel_requested, job.slurm_state) == ("cancelled", False, "CANCELLED")
    assert gw.history(first) == ["accepted", "queued", "launching", "cancelled"]
    assert gw.history(second) == ["accepted", "queued", "cancelled"]
    assert gw.state(other) == "queued"

    gw.cycle()
    assert fake.count("scancel") == 1  # done: not asked again


def test_a_job_still_in_the_gateway_is_cancelled_without_slurm(gw: Gateway, fake: FakeSlurm) -> None:
    job_id = gw.submit()
    ask_cancel(gw, job_id)
    gw.cycle()
    assert gw.state(job_id) == "cancelled"
    assert gw.events(job_id)[-1].reason == "cancelled by user-team-a"
    assert fake.count("scancel") == 0 and fake.count("sbatch") == 0


def test_a_failed_scancel_is_tried_again(gw: Gateway, fake: FakeSlurm) -> None:
    job_id = gw.submit()
    gw.cycle()
    ask_cancel(gw, job_id)
    fake.fail("scancel", "unreachable", times=1)
    gw.cycle()
    assert gw.job(job_id).cancel_requested and gw.state(job_id) == "queued"
    gw.cycle()
    assert fake.count("scancel") == 2
    assert (gw.state(job_id), gw.job(job_id).cancel_requested) == ("cancelled", False)


def test_cancelling_one_sweep_task_cancels_only_its_element(gw: Gateway, fake: FakeSlurm) -> None:
    sweep = gw.sweep([1, 2, 3], max_parallel=2)
    gw.cycle()
    tasks = gw.tasks(sweep)
    ask_cancel(gw, tasks[1].id)
    gw.cycle()
    assert fake.calls_of("scancel") == [("scancel", tasks[1].slurm_job_id)]
    assert [t.state for t in gw.tasks(sweep)] == ["queued", "cancelled", "queued"]


def test_scancel_runs_as_each_jobs_own_user(gw: Gateway, fake: FakeSlurm) -> None:
    mine, theirs = gw.submit("team-a"), gw.submit("team-b")
    gw.cycle()
    ask_cancel(gw, mine)
    ask_cancel(gw, theirs)
    gw.cycle()
    assert sorted(
        (user, call[1:]) for (command, user), call in zip(fake.run_as, fake.calls, strict=True) if command == "scancel"
    ) == [("user-team-a", (gw.slurm_id(mine),)), ("user-team-b", (gw.slurm_id(theirs),))]
