"""``decide()`` on a job Slurm no longer lists, the verdict it once left to the worker's poll: lost only past the
grace, when sacct answered, slurmctld was asked and does not hold it, and the worker never saw it (its memory,
passed in as evidence); and the tracker that gathers that evidence, on the fake Slurm."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from sqlmodel import Session

from gateway.store.models import Job
from gateway.worker.apply import Evidence, decide
from launchers.slurm.squeue import PendingInfo
from launchers.states import JobState
from tests.worker.conftest import Gateway
from tests.worker.fakeslurm import FakeSlurm
from tests.worker.support import restart

NOW = datetime(2026, 11, 23, 17, 0, tzinfo=UTC)


def stored() -> SimpleNamespace:
    """A job row as decide() reads it: queued in Slurm."""
    return SimpleNamespace(
        state="queued",
        slurm_job_id="41",
        slurm_state="PENDING",
        reason=None,
        position_in_queue=None,
        restarts=0,
        start_time=None,
        time_limit_min=60,
    )


def test_nothing_listing_it_past_the_grace_is_lost() -> None:
    evidence = Evidence(seen=None, lost_after_s=900.0, accounting_ok=True, controller_holds=False, ever_seen=False)
    transition = decide(stored(), evidence, NOW)
    assert transition.state is JobState.FAILED
    assert transition.fields["reason"].startswith("lost: neither accounting nor slurmctld has a record of Slurm job 41")
    assert transition.fields["end_time"] == NOW


@pytest.mark.parametrize(
    "evidence",
    [
        Evidence(seen=None, lost_after_s=None),  # within the grace
        Evidence(seen=None, lost_after_s=900.0, accounting_ok=False),  # sacct did not answer
        Evidence(seen=None, lost_after_s=900.0, controller_holds=True),  # slurmctld holds it, or was not asked
        Evidence(seen=None, lost_after_s=900.0, ever_seen=True),  # the worker saw it: it ends with a record
    ],
    ids=["within-grace", "sacct-failed", "controller-holds", "seen-before"],
)
def test_a_job_some_source_may_still_hold_is_not_lost(evidence: Evidence) -> None:
    assert decide(stored(), evidence, NOW).history == []


def test_a_job_in_the_queue_is_not_lost() -> None:
    pending = PendingInfo(reason="Priority", partition="team-a", position=4)
    transition = decide(stored(), Evidence(seen=None, pending=pending, lost_after_s=900.0), NOW)
    assert transition.history == [] and transition.fields == {"reason": "Priority", "position_in_queue": 4}


def test_an_element_cancelled_while_waiting_is_cancelled_not_lost() -> None:
    transition = decide(stored(), Evidence(seen=None, lost_after_s=900.0, vanishing=True), NOW)
    assert transition.state is JobState.CANCELLED


def test_a_job_slurm_forgot_is_lost_only_to_a_worker_that_never_saw_it(
    make_gateway: Callable[..., Gateway], fake: FakeSlurm
) -> None:
    gw = make_gateway()
    job_id = gw.submit("team-a")
    gw.cycle()
    forgotten = fake.job(gw.slurm_id(job_id))
    forgotten.in_accounting = forgotten.in_controller = False  # a controller state reset
    with Session(gw.engine) as session:
        row = session.get(Job, job_id)
        assert row is not None and row.slurm_submit_time is not None
        row.slurm_submit_time -= timedelta(seconds=gw.config.poll.lost_after_s + 60)
        session.add(row)
        session.commit()
    gw.cycle(2)
    assert gw.state(job_id) == "queued"  # this worker saw it: Slurm's silence about it is Slurm's trouble
    restart(gw).cycle()
    job = gw.job(job_id)
    assert job.state == "failed" and (job.reason or "").startswith("lost: neither accounting nor slurmctld")
