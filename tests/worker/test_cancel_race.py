"""A cancellation the API commits while the worker is sending the same job: whichever commits first wins, and a
cancelled job never reaches sbatch. (Seen on the real cluster: the API cancelled an accepted job between the
dispatcher's read and its mark, and the job ran in Slurm with a 'cancelled' event in its history.)"""

from __future__ import annotations

from typing import Any

import pytest
from sqlmodel import Session

from gateway.store.models import Job
from gateway.submit.job_requests import request_cancel
from gateway.worker import dispatch
from tests.worker.conftest import Gateway
from tests.worker.fakeslurm import FakeSlurm


def cancel_before_the_mark(gw: Gateway, monkeypatch: pytest.MonkeyPatch, job_id: str) -> None:
    """The API's cancellation, committed after the dispatcher read the job and before it marks it."""
    original = dispatch._mark_dispatching

    def cancel_first(session: Session, jobs: list[Job], *args: Any) -> bool:
        with Session(gw.engine, expire_on_commit=False) as api:
            job = api.get(Job, job_id)
            assert job is not None and job.state == "accepted" and not job.dispatching
            request_cancel(api, job, "alice")
            api.commit()
        return original(session, jobs, *args)

    monkeypatch.setattr(dispatch, "_mark_dispatching", cancel_first)


def test_a_cancel_committed_after_the_dispatch_read_wins(
    gw: Gateway, fake: FakeSlurm, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = gw.submit()
    cancel_before_the_mark(gw, monkeypatch, job_id)
    gw.cycle()
    assert fake.count("sbatch") == 0
    job = gw.job(job_id)
    assert (job.state, job.reason, job.dispatching, job.slurm_job_id) == (
        "cancelled",
        "cancelled by alice",
        False,
        None,
    )
    assert gw.history(job_id) == ["accepted", "cancelled"]
    gw.cycle(2)  # and it stays so
    assert fake.count("sbatch") == 0 and gw.state(job_id) == "cancelled"


def test_the_rest_of_a_batch_goes_next_cycle(gw: Gateway, fake: FakeSlurm, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two same-shape jobs (one array), one cancelled in the gap: none is sent this cycle; the other goes next,
    alone, with nothing left of the abandoned batch."""
    first, second = gw.submit(), gw.submit()
    original = dispatch._mark_dispatching
    cancel_before_the_mark(gw, monkeypatch, first)
    gw.cycle()
    assert fake.count("sbatch") == 0
    assert gw.state(first) == "cancelled"
    waiting = gw.job(second)
    assert (waiting.state, waiting.dispatching, waiting.batch_id) == ("accepted", False, None)
    monkeypatch.setattr(dispatch, "_mark_dispatching", original)  # not undo(): the fake Slurm is patched in too
    gw.cycle()
    assert fake.count("sbatch") == 1
    assert gw.state(second) == "queued" and gw.state(first) == "cancelled"


def test_a_cancel_after_the_mark_is_scancelled_once_slurm_has_it(
    gw: Gateway, fake: FakeSlurm, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other order: the worker marked the job first, so the API's cancellation is a request to scancel."""
    job_id = gw.submit()
    original = dispatch._mark_dispatching

    def cancel_after(session: Session, jobs: list[Job], *args: Any) -> bool:
        marked = original(session, jobs, *args)
        with Session(gw.engine, expire_on_commit=False) as api:
            job = api.get(Job, job_id)
            assert job is not None
            request_cancel(api, job, "alice")
            api.commit()
            assert job.state == "accepted" and job.cancel_requested
        return marked

    monkeypatch.setattr(dispatch, "_mark_dispatching", cancel_after)
    gw.cycle()
    assert fake.count("sbatch") == 1
    gw.cycle()
    assert fake.count("scancel") == 1
