"""After a crash between sbatch and the database update: the Slurm job found by its comment is adopted, never
submitted twice; a row that never reached Slurm is released and submitted again."""

from __future__ import annotations

from datetime import timedelta

import pytest

from gateway.store.models import utcnow
from gateway.submit.comments import slurm_comment, sweep_comment
from gateway.worker.reconcile import reconcile
from tests.worker.conftest import Gateway
from tests.worker.fakeslurm import FakeSlurm
from tests.worker.support import crash_in_sbatch, restart


def test_a_job_sbatch_took_before_the_crash_is_adopted_not_submitted_again(gw: Gateway, fake: FakeSlurm) -> None:
    job_id = gw.submit()
    slurm_id = crash_in_sbatch(gw, fake)
    job = gw.job(job_id)
    assert (job.state, job.dispatching, job.slurm_job_id) == ("accepted", True, None)

    restart(gw)
    job = gw.job(job_id)
    assert (job.state, job.dispatching, job.slurm_job_id, job.slurm_state) == ("queued", False, slurm_id, "PENDING")
    assert gw.history(job_id) == ["accepted", "queued"]

    fake.start(slurm_id)
    gw.cycle()
    assert fake.count("sbatch") == 1
    assert gw.state(job_id) == "launching"


def test_an_adopted_job_found_in_slurmctld(gw: Gateway, fake: FakeSlurm) -> None:
    job_id = gw.submit()
    gw.update(job_id, dispatching=True)
    slurm_id = fake.submit(comment=slurm_comment(job_id), user="user-team-a", account="team-a")
    fake.submit(comment="hpcgw:0123456789abcdef")  # another gateway's job: left alone
    fake.submit(comment="not ours")
    reconcile(gw.engine)
    assert gw.job(job_id).slurm_job_id == slurm_id
    # slurmctld's comments, accounting's comments: two commands, however many orphans.
    assert fake.count("squeue") == 1 and fake.count("sacct") == 1
    assert fake.count("sbatch") == 0


def test_adopted_from_accounting_once_slurmctld_forgot_the_job(gw: Gateway, fake: FakeSlurm) -> None:
    job_id = gw.submit()
    gw.update(job_id, dispatching=True)
    slurm_id = fake.submit(comment=slurm_comment(job_id), user="user-team-a", account="team-a")
    fake.finish(slurm_id, "COMPLETED")
    fake.forget(slurm_id)
    reconcile(gw.engine)
    assert gw.job(job_id).slurm_job_id == slurm_id
    gw.cycle()
    assert gw.state(job_id) == "succeeded"
    assert fake.count("sbatch") == 0


@pytest.mark.parametrize(
    ("user", "account", "earlier"),
    [("user-team-b", "team-a", False), ("user-team-a", "team-b", False), ("user-team-a", "team-a", True)],
)
def test_a_job_with_our_comment_but_not_ours_is_not_adopted(
    gw: Gateway, fake: FakeSlurm, user: str, account: str, earlier: bool
) -> None:
    """Comments are public: another user's job (or one in another account, or from before the row was marked)
    with ``hpcgw:<id>`` does not take the job's place."""
    job_id = gw.submit()
    if earlier:
        foreign = fake.submit(comment=slurm_comment(job_id), user=user, account=account)
        fake.job(foreign).submit -= timedelta(hours=1)
        gw.update(job_id, dispatching=True, dispatch_time=utcnow())
    else:
        gw.update(job_id, dispatching=True, dispatch_time=utcnow() - timedelta(minutes=1))
        foreign = fake.submit(comment=slurm_comment(job_id), user=user, account=account)
    reconcile(gw.engine)
    job = gw.job(job_id)
    assert (job.slurm_job_id, job.dispatching) == (None, False)  # released: the next dispatch sends it
    assert fake.job(foreign).state == "PENDING" and fake.count("sbatch") == 0


def test_a_job_that_never_reached_slurm_is_released_and_submitted(gw: Gateway, fake: FakeSlurm) -> None:
    job_id = gw.submit()
    gw.update(job_id, dispatching=True)  # the gateway died before its sbatch reached Slurm
    reconcile(gw.engine)
    job = gw.job(job_id)
    assert (job.state, job.dispatching, job.slurm_job_id) == ("accepted", False, None)
    gw.cycle()
    assert fake.count("sbatch") == 1
    assert gw.state(job_id) == "queued"


def test_a_sweeps_array_is_adopted_as_its_elements(gw: Gateway, fake: FakeSlurm) -> None:
    sweep = gw.sweep([1, 2, 3], max_parallel=2)
    array = crash_in_sbatch(gw, fake)
    assert [(t.dispatching, t.slurm_job_id) for t in gw.tasks(sweep)] == [(True, None)] * 3
    assert gw.sweep_row(sweep).array_ids == []

    restart(gw)
    tasks = gw.tasks(sweep)
    assert [(t.state, t.slurm_job_id, t.dispatching) for t in tasks] == [
        ("queued", f"{array}_{i}", False) for i in range(3)
    ]
    assert gw.sweep_row(sweep).array_ids == [array]
    fake.start(f"{array}_2")
    gw.cycle()
    assert fake.count("sbatch") == 1
    assert [t.state for t in gw.tasks(sweep)] == ["queued", "queued", "launching"]


def test_a_sweep_whose_array_slurm_does_not_have_is_released(gw: Gateway, fake: FakeSlurm) -> None:
    sweep = gw.sweep([1, 2], max_parallel=1)
    for task in gw.tasks(sweep):
        gw.update(task.id, dispatching=True)
    fake.submit(comment=sweep_comment(sweep, 1), array="0-1%1")  # another attempt's array: not this one
    reconcile(gw.engine)
    assert [(t.state, t.dispatching, t.slurm_job_id) for t in gw.tasks(sweep)] == [("accepted", False, None)] * 2
    gw.cycle()
    assert [t.state for t in gw.tasks(sweep)] == ["queued", "queued"]
    assert fake.count("sbatch") == 1


def test_nothing_to_reconcile_asks_slurm_nothing(gw: Gateway, fake: FakeSlurm) -> None:
    gw.submit()
    reconcile(gw.engine)
    assert fake.calls == []


@pytest.mark.parametrize("kind", ["unreachable", "timeout"])
def test_slurm_not_answering_at_start_submits_nothing_twice(gw: Gateway, fake: FakeSlurm, kind: str) -> None:
    job_id = gw.submit()
    slurm_id = crash_in_sbatch(gw, fake)
    for command in ("squeue", "sacct", "sbatch", "scontrol", "sinfo"):
        fake.fail(command, kind)
    restart(gw)
    gw.cycle(2)
    job = gw.job(job_id)
    assert (job.state, job.dispatching, job.slurm_job_id) == ("accepted", True, None)

    fake.heal()
    gw.cycle()  # reconciliation runs again before anything is dispatched
    assert gw.slurm_id(job_id) == slurm_id
    assert gw.state(job_id) == "queued"
    assert fake.count("sbatch") == 1
