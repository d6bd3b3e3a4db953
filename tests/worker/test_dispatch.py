"""Dispatch: each team's quota, oldest first, sweeps as one array, ``dispatching`` committed before sbatch."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sqlmodel import Session

from gateway.store.models import Job
from gateway.worker.dispatch import Outcome
from tests.worker.conftest import Gateway
from tests.worker.fakeslurm import FakeSlurm, parse_sbatch


def sbatch_options(fake: FakeSlurm) -> list[dict[str, str]]:
    return [parse_sbatch(fake.scripts[job_id], ()) for job_id in sorted(fake.scripts, key=int)]


def test_max_running_jobs_holds_and_the_next_goes_out_when_one_ends(gw: Gateway, fake: FakeSlurm) -> None:
    ids = [gw.submit() for _ in range(3)]  # team-a runs 2 jobs at once
    gw.cycle()
    assert [gw.state(i) for i in ids] == ["queued", "queued", "accepted"]
    assert fake.count("sbatch") == 1  # the two that fit share a shape: one array
    assert [gw.slurm_id(i) for i in ids[:2]] == ["100_0", "100_1"]
    assert gw.job(ids[2]).slurm_job_id is None

    gw.cycle()  # nothing ended: the third still waits
    assert gw.state(ids[2]) == "accepted" and fake.count("sbatch") == 1

    fake.finish(gw.slurm_id(ids[0]))
    gw.cycle()  # this cycle's poll sees the end; the next cycle's dispatch uses the freed place
    assert gw.state(ids[0]) == "succeeded" and gw.state(ids[2]) == "accepted"
    gw.cycle()
    assert gw.state(ids[2]) == "queued" and fake.count("sbatch") == 2


def test_oldest_first_and_a_later_smaller_job_does_not_overtake(
    make_gateway: Callable[..., Gateway], fake: FakeSlurm
) -> None:
    gw = make_gateway({"team_a": {"max_running_jobs": 5, "max_gpus": 4}})
    first = gw.submit(gpus_per_node=2)
    big = gw.submit(gpus_per_node=4)  # 2 + 4 > 4: waits
    small = gw.submit(gpus_per_node=1)  # would fit, but came later
    gw.cycle(2)
    assert [gw.state(i) for i in (first, big, small)] == ["queued", "accepted", "accepted"]
    assert fake.count("sbatch") == 1

    fake.finish(gw.slurm_id(first))
    gw.cycle(2)
    assert [gw.state(i) for i in (big, small)] == ["queued", "accepted"]  # 4 GPUs: the team's all
    assert sbatch_options(fake)[-1]["gpus-per-node"] == "4"

    fake.finish(gw.slurm_id(big))
    gw.cycle(2)
    assert gw.state(small) == "queued"
    assert [o["comment"] for o in sbatch_options(fake)] == [f"hpcgw:{i}" for i in (first, big, small)]


def test_one_teams_backlog_does_not_block_another_team(gw: Gateway, fake: FakeSlurm) -> None:
    a = [gw.submit("team-a") for _ in range(4)]
    b = gw.submit("team-b")
    gw.cycle()
    assert [gw.state(i) for i in a] == ["queued", "queued", "accepted", "accepted"]
    assert gw.state(b) == "queued"
    options = sbatch_options(fake)
    assert [(o["partition"], o["account"]) for o in options] == [("team-a", "team-a"), ("team-b", "team-b")]


def test_a_sweep_goes_out_as_one_array_with_its_throttle(gw: Gateway, fake: FakeSlurm) -> None:
    sweep = gw.sweep([1, 2, 3], max_parallel=2)
    gw.cycle()
    assert fake.count("sbatch") == 1
    (array,) = fake.scripts
    options = parse_sbatch(fake.scripts[array], ())
    assert options["array"] == "0-2%2"
    assert options["comment"] == f"hpcgw:sweep:{sweep}:0"
    tasks = gw.tasks(sweep)
    assert [(t.state, t.slurm_job_id) for t in tasks] == [("queued", f"{array}_{i}") for i in range(3)]
    assert gw.sweep_row(sweep).array_ids == [array]
    assert [e.job_id for e in fake.elements(array)] == [f"{array}_{i}" for i in range(3)]


def test_a_sweep_past_max_array_size_is_split_into_dependent_arrays(gw: Gateway, fake: FakeSlurm) -> None:
    fake.max_array_size = 2  # read from `scontrol show config` at the first cycle
    sweep = gw.sweep([1, 2, 3], max_parallel=2)
    gw.cycle()
    first, second = sorted(fake.scripts, key=int)
    assert [o["array"] for o in sbatch_options(fake)] == ["0-1%2", "0-0%1"]
    assert "dependency" not in sbatch_options(fake)[0]
    assert sbatch_options(fake)[1]["dependency"] == f"afterany:{first}"
    assert [t.slurm_job_id for t in gw.tasks(sweep)] == [f"{first}_0", f"{first}_1", f"{second}_0"]
    assert gw.sweep_row(sweep).array_ids == [first, second]


def test_job_is_marked_dispatching_and_committed_before_sbatch(gw: Gateway, fake: FakeSlurm) -> None:
    job_id = gw.submit()
    seen: list[tuple[str, bool, str | None]] = []

    def look(_argv: tuple[str, ...], options: dict[str, str]) -> None:
        assert options["comment"] == f"hpcgw:{job_id}"
        with Session(gw.engine) as other:  # another connection: sees only what was committed
            row = other.get(Job, job_id)
            assert row is not None
            seen.append((row.state, row.dispatching, row.slurm_job_id))

    fake.on_sbatch = look
    gw.cycle()
    assert seen == [("accepted", True, None)]
    job = gw.job(job_id)
    assert (job.state, job.dispatching, job.slurm_job_id) == ("queued", False, "100")
    assert job.slurm_state == "PENDING" and job.slurm_submit_time is not None
    assert Path(job.folder, "model").is_dir()  # the protocol's MODEL_OUTPUT_DIR exists before the job runs


def test_sweep_tasks_are_marked_dispatching_before_their_sbatch(gw: Gateway, fake: FakeSlurm) -> None:
    sweep = gw.sweep([1, 2], max_parallel=1)
    seen: list[list[tuple[bool, str | None]]] = []

    def look(_argv: tuple[str, ...], _options: dict[str, str]) -> None:
        seen.append([(t.dispatching, t.slurm_job_id) for t in gw.tasks(sweep)])

    fake.on_sbatch = look
    gw.cycle()
    assert seen == [[(True, None), (True, None)]]
    assert [(t.dispatching, t.state) for t in gw.tasks(sweep)] == [(False, "queued")] * 2


def test_dispatcher_outcomes(gw: Gateway, fake: FakeSlurm) -> None:
    worker = gw.worker

    def run() -> Outcome:
        with Session(gw.engine, expire_on_commit=False) as session:
            return worker.dispatcher.run(session)

    assert run() is Outcome.NOTHING
    gw.submit()
    assert run() is Outcome.QUEUED
    fake.fail("sbatch", "unreachable")
    gw.submit()
    assert run() is Outcome.UNREACHABLE
    fake.fail("sbatch", "refused")
    assert run() is Outcome.REFUSED
    assert run() is Outcome.NOTHING  # the refused job failed: nothing waits any more
    assert fake.count("sbatch") == 3


def test_dispatch_reports_whether_anything_changed(gw: Gateway, fake: FakeSlurm) -> None:
    assert gw.worker.dispatch() is False
    gw.submit()
    fake.fail("sbatch", "unreachable", times=1)
    assert gw.worker.dispatch() is False  # still accepted: nothing the API shows changed
    assert gw.worker.dispatch() is True
    assert gw.worker.stats.dispatched == 1


def test_every_sbatch_runs_as_the_jobs_own_user(gw: Gateway, fake: FakeSlurm) -> None:
    gw.sweep([0.1, 0.2], max_parallel=1, team="team-a")
    single = gw.submit("team-a")
    gw.submit("team-b")
    gw.cycle()
    assert sorted(user or "" for command, user in fake.run_as if command == "sbatch") == ["user-team-a", "user-team-b"]
    # The sweep's two tasks in Slurm are team-a's quota of 2: its single job waits in the gateway.
    assert gw.state(single) == "accepted"
