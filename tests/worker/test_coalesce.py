"""Coalesced dispatch against the fake Slurm: same-shape jobs of one cycle become one array with per-element
commands and environments; other shapes and users go apart; a crash mid-batch is adopted element by element; a
crash's rows wait out the grace; the lease lets one worker submit; the API reads a worker it does not host."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session

from gateway.schemas import JobCreate
from gateway.site.auth import Principal
from gateway.store.models import utcnow
from gateway.submit.comments import batch_comment
from gateway.submit.intake import create_job
from gateway.worker import status
from gateway.worker.lease import AdvisoryLock, FileLock, WorkerConflictError, lease_for
from gateway.worker.loop import Worker
from gateway.worker.reconcile import reconcile
from gateway.worker.stats import WorkerStats
from gateway.worker.status import WorkerView
from launchers.slurm.sinfo import PartitionSize
from tests.gateway.conftest import DATASET, database_url, postgres_url  # noqa: F401  (fixtures)
from tests.worker.conftest import ALGORITHM, Gateway
from tests.worker.fakeslurm import FakeSlurm, parse_sbatch
from tests.worker.support import crash_in_sbatch, restart


def submit_as(gw: Gateway, user: str, team: str = "team-a", **fields: Any) -> str:
    request = JobCreate(algorithm=ALGORITHM, dataset_id=DATASET[0], train_data_version_hash=DATASET[1], **fields)
    with Session(gw.engine, expire_on_commit=False) as session:
        job, _ = create_job(session, gw.config, Principal(user=user, team=team, admin=False), request, {})
    job_id: str = job.id
    return job_id


def element_task(submit_folder: str, slurm_id: str) -> object:
    """The TrainerTask an array element runs: submitit's pickle of it (``<A>_<i>_submitted.pkl``, a link to the
    array's shared one) resolved through the array's manifest, as the element does by its SLURM_ARRAY_TASK_ID."""
    with open(Path(submit_folder) / f"{slurm_id}_submitted.pkl", "rb") as fh:
        return pickle.load(fh).function.element(int(slurm_id.split("_")[1]))


def test_fifty_same_shape_jobs_are_one_array_each_with_its_own_command_and_environment(
    make_gateway: Callable[..., Gateway], fake: FakeSlurm
) -> None:
    gw = make_gateway({"team_a": {"max_running_jobs": 60, "max_queued_jobs": 100}})
    ids = [gw.submit(parameters={"LR": str(i)}) for i in range(50)]
    gw.cycle()
    assert fake.count("sbatch") == 1
    jobs = [gw.job(i) for i in ids]
    assert [j.slurm_job_id for j in jobs] == [f"100_{i}" for i in range(50)]
    assert {j.batch_id for j in jobs} == {jobs[0].batch_id} and [j.batch_index for j in jobs] == list(range(50))
    options = parse_sbatch(fake.scripts["100"], ())
    assert options["array"] == "0-49%50" and options["comment"] == batch_comment(jobs[0].batch_id or "")
    for job in (jobs[0], jobs[31]):
        task = element_task(job.submit_folder, job.slurm_job_id or "")
        assert task.env["JOB_ID"] == job.id and task.env["LR"] == job.parameters["LR"]  # type: ignore[attr-defined]
        assert task.env["METRICS_FILE"] == str(Path(job.folder) / "metrics.jsonl")  # type: ignore[attr-defined]
    assert all(gw.history(i) == ["accepted", "queued"] for i in ids)

    gw.update(ids[3], cancel_requested=True)
    gw.cycle()
    assert fake.calls_of("scancel")[-1][1:] == ("100_3",)  # the element, not the array


def test_other_shapes_and_users_go_out_as_separate_arrays(
    make_gateway: Callable[..., Gateway], fake: FakeSlurm
) -> None:
    gw = make_gateway({"team_a": {"max_running_jobs": 20}, "team_b": {"max_running_jobs": 20}})
    a10 = [submit_as(gw, "alice", time_limit_min=10) for _ in range(3)]
    a20 = [submit_as(gw, "alice", time_limit_min=20) for _ in range(2)]
    c10 = [submit_as(gw, "carol", time_limit_min=10) for _ in range(2)]
    b10 = [submit_as(gw, "bob", team="team-b", time_limit_min=10) for _ in range(2)]
    gw.cycle()
    masters = {gw.slurm_id(i).partition("_")[0] for i in a10 + a20 + c10 + b10}
    assert fake.count("sbatch") == 4 and len(masters) == 4
    for group in (a10, a20, c10, b10):
        assert len({gw.slurm_id(i).partition("_")[0] for i in group}) == 1
        assert sorted(gw.slurm_id(i).partition("_")[2] for i in group) == [str(k) for k in range(len(group))]
    times = sorted(parse_sbatch(s, ())["time"] for s in fake.scripts.values())
    assert times == ["10", "10", "10", "20"]


def test_max_array_size_splits_a_batch_into_arrays_that_run_side_by_side(
    make_gateway: Callable[..., Gateway], fake: FakeSlurm
) -> None:
    fake.max_array_size = 4
    gw = make_gateway({"team_a": {"max_running_jobs": 20}})
    ids = [gw.submit() for _ in range(10)]
    gw.cycle()
    assert [gw.slurm_id(i) for i in ids] == [f"{m}_{k}" for m, n in ((100, 4), (101, 4), (102, 2)) for k in range(n)]
    assert all("dependency" not in parse_sbatch(s, ()) for s in fake.scripts.values())


def test_a_crash_after_a_batchs_sbatch_adopts_each_element(gw: Gateway, fake: FakeSlurm) -> None:
    ids = [gw.submit(), gw.submit()]  # team-a: 2 at once
    master = crash_in_sbatch(gw, fake)
    assert {gw.job(i).dispatching for i in ids} == {True}
    restart(gw)
    assert [gw.slurm_id(i) for i in ids] == [f"{master}_0", f"{master}_1"]
    for job in map(gw.job, ids):  # the links the crash left unmade, each element's own job again
        assert element_task(job.submit_folder, job.slurm_job_id or "").env["JOB_ID"] == job.id  # type: ignore[attr-defined]
    gw.cycle()
    assert fake.count("sbatch") == 1


def test_rows_of_a_crash_wait_out_the_grace_before_they_are_sent_again(gw: Gateway, fake: FakeSlurm) -> None:
    """A killed worker's sbatch may land after the next worker looked: not found is not yet "never sent"."""
    ids = [gw.submit(), gw.submit()]
    gw.update(ids[0], dispatching=True, dispatch_time=utcnow(), batch_id="feedc0de", batch_index=0)
    gw.update(ids[1], dispatching=True, dispatch_time=utcnow(), batch_id="feedc0de", batch_index=1)
    assert reconcile(gw.engine, grace_s=30) is False  # within the grace: look again next cycle
    assert {gw.job(i).dispatching for i in ids} == {True}
    # the dead worker's sbatch lands now
    late = fake.submit(comment=batch_comment("feedc0de"), array="0-1", user="user-team-a", account="team-a")
    assert reconcile(gw.engine, grace_s=30) is True
    assert [gw.slurm_id(i) for i in ids] == [f"{late}_0", f"{late}_1"]


def test_after_the_grace_rows_never_sent_are_released_from_their_batch(gw: Gateway, fake: FakeSlurm) -> None:
    job_id = gw.submit()
    long_ago = utcnow() - timedelta(seconds=60)
    gw.update(job_id, dispatching=True, dispatch_time=long_ago, batch_id="feedc0de", batch_index=0)
    assert reconcile(gw.engine, grace_s=30) is True
    job = gw.job(job_id)
    assert (job.dispatching, job.batch_id, job.submit_folder) == (False, None, str(Path(job.folder) / "job"))
    gw.cycle()
    assert gw.state(job_id) == "queued" and fake.count("sbatch") == 1


def test_a_refused_batch_under_grpsubmitjobs_is_sent_in_halves(
    make_gateway: Callable[..., Gateway], fake: FakeSlurm
) -> None:
    gw = make_gateway({"team_a": {"max_running_jobs": 20}})
    ids = [gw.submit() for _ in range(8)]
    fake.fail("sbatch", "submit_limit", times=1)
    gw.cycle()
    assert {gw.state(i) for i in ids} == {"accepted"} and {gw.job(i).batch_id for i in ids} == {None}
    gw.cycle()
    assert [gw.slurm_id(i) for i in ids] == [f"{m}_{k}" for m in (100, 101) for k in range(4)]


def test_a_second_worker_on_sqlite_refuses_with_the_first_ones_name(tmp_path: Path) -> None:
    first, second = FileLock(tmp_path / "gw.db.worker.lock"), FileLock(tmp_path / "gw.db.worker.lock")
    assert first.acquire()
    with pytest.raises(WorkerConflictError, match=r"another worker \(.+:\d+\) is active on this SQLite database"):
        second.acquire()
    first.release()
    assert second.acquire()
    second.release()


def test_one_postgresql_advisory_lock_holder_at_a_time(database_url: str) -> None:
    from gateway.store.db import make_engine

    engine = make_engine(database_url)
    lease, other = lease_for(engine), lease_for(engine)
    try:
        assert lease.acquire() and lease.held()
        if isinstance(lease, AdvisoryLock):
            assert not other.acquire()  # standing by
            lease.release()
            assert other.acquire() and other.held()
        else:
            with pytest.raises(WorkerConflictError):
                other.acquire()
    finally:
        lease.release()
        other.release()
        engine.dispose()


def test_a_worker_wakes_for_rows_accepted_or_cancelled_since_its_last_cycle(gw: Gateway, fake: FakeSlurm) -> None:
    first = gw.submit()
    gw.cycle()
    gw.worker._since = utcnow()
    assert not gw.worker.has_new_work()
    gw.submit()
    assert gw.worker.has_new_work()
    gw.cycle()
    gw.worker._since = utcnow()
    with Session(gw.engine) as session:
        from gateway.store.models import Job
        from gateway.submit.job_requests import request_cancel

        job = session.get(Job, first)
        assert job is not None
        request_cancel(session, job, "alice")
        session.commit()
    assert gw.worker.has_new_work()


def test_an_api_without_its_own_worker_reads_the_status_row(gw: Gateway, fake: FakeSlurm) -> None:
    view = WorkerView(gw.engine, None, poll_interval_s=1.0)
    assert view.health()["worker_alive"] is False and view.partition_sizes == {}
    epoch = status.take_over(gw.engine, "host:1")
    stats = WorkerStats(cycles=7, dispatched=3, slurm_reachable=False)
    status.publish(gw.engine, epoch, stats, {"team-a": PartitionSize(nodes=2, max_cpus=2, max_mem_mb=4000)})
    status.publish(gw.engine, epoch - 1, WorkerStats(cycles=99), {})  # an overtaken worker writes nothing
    view._read_at = float("-inf")
    health = view.health(detailed=True)  # the worker's host is for admins only
    assert (health["worker_alive"], health["worker"], health["worker_epoch"]) == (True, "host:1", epoch)
    assert (health["cycles"], health["slurm_reachable"]) == (7, False)
    assert view.partition_sizes == {"team-a": PartitionSize(nodes=2, max_cpus=2, max_mem_mb=4000)}
    assert isinstance(gw.worker, Worker)


def test_jobs_that_arrive_while_sbatch_runs_go_out_in_the_same_cycle_before_its_poll(
    make_gateway: Callable[..., Gateway], fake: FakeSlurm
) -> None:
    """A burst: the poll of thousands of fresh jobs costs as much as sending them, so what arrived during an
    sbatch is sent first, as its own array, and the cycle's one poll then sees every job."""
    gw = make_gateway({"team_a": {"max_running_jobs": 100, "max_queued_jobs": 100}})
    first = [gw.submit() for _ in range(3)]
    late: list[str] = []

    def arrive(_argv: object, _options: object) -> None:
        if not late:
            late.extend(gw.submit() for _ in range(4))

    fake.on_sbatch = arrive
    gw.cycle()
    assert [gw.state(j) for j in first + late] == ["queued"] * 7
    sbatch = [i for i, call in enumerate(fake.calls) if call[0] == "sbatch"]
    sacct = [i for i, call in enumerate(fake.calls) if call[0] == "sacct"]
    assert len(sbatch) == 2 and len(sacct) == 1 and sbatch[-1] < sacct[0]
    assert {master(gw.slurm_id(j)) for j in first} != {master(gw.slurm_id(j)) for j in late}  # two arrays
    assert [gw.history(j) for j in first + late] == [["accepted", "queued"]] * 7


def master(slurm_id: str) -> str:
    return slurm_id.split("_")[0]
