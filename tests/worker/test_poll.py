"""Tracking: one sacct per cycle, the phases a cycle missed, settled end states, the trainer's exit code, pending
reasons, and what happens when accounting (or slurmctld too) does not answer."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from launchers.slurm.ids import master_id
from launchers.slurm.sacct import delimiter_of, sacct_argv
from tests.worker.conftest import Gateway
from tests.worker.fakeslurm import FakeSlurm


def queued(gw: Gateway, count: int = 1, team: str = "team-a") -> list[str]:
    ids = [gw.submit(team) for _ in range(count)]
    gw.cycle()
    assert {gw.state(i) for i in ids} == {"queued"}
    return ids


@pytest.mark.parametrize("count", [1, 50])
def test_one_sacct_call_per_cycle(make_gateway: Callable[..., Gateway], fake: FakeSlurm, count: int) -> None:
    gw = make_gateway({"team_a": {"max_running_jobs": 50}})
    ids = queued(gw, count)
    assert fake.count("sacct") == 1  # the dispatching cycle polled them too
    for job_id in ids[: count // 2 + 1]:
        fake.start(gw.slurm_id(job_id))
    gw.cycle()
    assert fake.count("sacct") == 2
    assert fake.count("squeue") == 2  # pending reasons: one squeue per cycle while some are queued
    assert fake.count("sbatch") == 1  # one job, or fifty of one shape as one array
    assert fake.sacct_queries()[-1] == "100"  # an array is asked for by its own id
    assert {gw.state(i) for i in ids[: count // 2 + 1]} == {"launching"}


def test_sacct_is_chunked(make_gateway: Callable[..., Gateway], fake: FakeSlurm) -> None:
    gw = make_gateway({"team_a": {"max_running_jobs": 50}}, poll={"sacct_chunk": 20})
    for _ in range(50):  # one per cycle: fifty Slurm jobs, not one array
        queued(gw, 1)
    assert [len(q.split(",")) for q in fake.sacct_queries()[-3:]] == [20, 20, 10]


def test_the_sacct_call_asks_for_every_run_without_steps(gw: Gateway, fake: FakeSlurm) -> None:
    job_id = queued(gw)[0]
    call = fake.calls_of("sacct")[-1]
    delimiter = delimiter_of(call)  # made for the call: no job's name or comment can hold it
    assert len(delimiter) > 8 and call == tuple(sacct_argv([gw.slurm_id(job_id)], attempts=True, delimiter=delimiter))


def test_an_array_is_asked_for_by_its_own_id(gw: Gateway, fake: FakeSlurm) -> None:
    sweep = gw.sweep(list(range(30)), max_parallel=2)
    single = gw.submit("team-b")
    gw.cycle()
    (array,) = {t.slurm_job_id.split("_")[0] for t in gw.tasks(sweep) if t.slurm_job_id}
    assert fake.sacct_queries() == [f"{array},{gw.slurm_id(single)}"]
    fake.start(f"{array}_0")
    fake.start(f"{array}_1")
    fake.finish(f"{array}_1", exit_code=0)
    gw.cycle()
    assert len(fake.sacct_queries()) == 2
    states = [t.state for t in gw.tasks(sweep)]
    assert states[:3] == ["launching", "succeeded", "queued"]  # elements read from the pending range too
    assert states[3:] == ["queued"] * 27


def test_phases_missed_between_two_cycles_are_recorded(gw: Gateway, fake: FakeSlurm) -> None:
    job_id = queued(gw)[0]
    slurm_id = gw.slurm_id(job_id)
    fake.start(slurm_id)
    gw.markers(job_id).write_started(size=1, restart=0)
    fake.finish(slurm_id, "COMPLETED")
    gw.cycle()  # one look: already over
    assert gw.history(job_id) == ["accepted", "queued", "launching", "running", "succeeded"]
    job = gw.job(job_id)
    assert (job.exit_code, job.reason, job.slurm_state) == (0, None, "COMPLETED")
    assert job.start_time is not None and job.end_time is not None


def test_without_a_start_marker_a_finished_job_never_claims_it_ran_the_trainer(gw: Gateway, fake: FakeSlurm) -> None:
    job_id = queued(gw)[0]
    fake.finish(gw.slurm_id(job_id), "FAILED", exit_code=1)  # Slurm started it; no rank ever started
    gw.cycle()
    assert gw.history(job_id) == ["accepted", "queued", "launching", "failed"]


def test_each_phase_in_its_own_cycle(gw: Gateway, fake: FakeSlurm) -> None:
    job_id = queued(gw)[0]
    slurm_id = gw.slurm_id(job_id)
    fake.start(slurm_id)
    gw.cycle()
    assert gw.state(job_id) == "launching"
    gw.cycle()
    assert gw.history(job_id) == ["accepted", "queued", "launching"]  # no change, no new history
    gw.markers(job_id).write_started(size=1, restart=0)
    gw.cycle()
    assert gw.state(job_id) == "running"
    fake.finish(slurm_id)
    gw.cycle()
    assert gw.history(job_id) == ["accepted", "queued", "launching", "running", "succeeded"]
    assert fake.count("sacct") == 5
    gw.cycle()  # nothing active: no sacct at all
    assert fake.count("sacct") == 5


def test_an_end_state_without_its_end_time_is_not_applied(gw: Gateway, fake: FakeSlurm) -> None:
    job_id = queued(gw)[0]
    slurm_id = gw.slurm_id(job_id)
    fake.start(slurm_id)
    gw.markers(job_id).write_started(size=1, restart=0)
    gw.cycle()
    fake.finish(slurm_id, "COMPLETED", settled=False)
    gw.cycle(2)
    job = gw.job(job_id)
    assert (job.state, job.slurm_state, job.end_time) == ("running", "RUNNING", None)
    fake.settle(slurm_id)
    gw.cycle()
    assert gw.state(job_id) == "succeeded"
    assert gw.history(job_id).count("succeeded") == 1


def test_the_first_failing_ranks_exit_code_wins(gw: Gateway, fake: FakeSlurm) -> None:
    job_id = gw.submit(nodes=2)
    gw.cycle()
    slurm_id = gw.slurm_id(job_id)
    fake.start(slurm_id, node_list="n[1-2]")
    markers = gw.markers(job_id)
    markers.write_started(size=2, restart=0)
    markers.write_exit(rank=1, restart=0, code=3)
    markers.write_exit(rank=0, restart=0, code=143)  # killed by srun after rank 1 failed: later
    fake.finish(slurm_id, "FAILED", exit_code=1)
    gw.cycle()
    job = gw.job(job_id)
    assert (job.state, job.exit_code) == ("failed", 3)
    assert job.reason == "the trainer exited with code 3 on rank 1"
    assert gw.events(job_id)[-1].reason == job.reason
    assert gw.worker.stats.failures_by_team == {"team-a": 1}


def test_pending_reason_and_queue_position_come_from_squeue(gw: Gateway, fake: FakeSlurm) -> None:
    first, second = queued(gw, 2)
    other = fake.submit(comment="someone else", partition="team-a")  # not ours, ahead in the queue
    fake.pend(other, "Priority", priority=10)
    fake.pend(gw.slurm_id(first), "Resources")
    fake.pend(gw.slurm_id(second), "Priority")
    gw.cycle()
    assert [(gw.job(i).reason, gw.job(i).position_in_queue) for i in (first, second)] == [
        ("Resources", 2),
        ("Priority", 3),
    ]
    fake.start(gw.slurm_id(first))
    gw.cycle()
    job = gw.job(first)
    assert (job.state, job.reason, job.position_in_queue) == ("launching", None, None)
    assert gw.job(second).position_in_queue == 2


@pytest.mark.parametrize(
    ("slurm_state", "exit_code", "signal", "state", "reason"),
    [
        ("CANCELLED", 0, 15, "cancelled", "cancelled"),
        ("TIMEOUT", 0, 15, "timeout", "reached its time limit of 60 min"),
        ("FAILED", 2, 0, "failed", "the job script exited with code 2"),
        ("FAILED", 0, 9, "failed", "killed by signal 9 (SIGKILL)"),
        ("OUT_OF_MEMORY", 0, 125, "failed", "out of memory: a rank exceeded the job's memory limit"),
        ("COMPLETED", 0, 0, "succeeded", None),
    ],
)
def test_slurm_end_states(
    gw: Gateway, fake: FakeSlurm, slurm_state: str, exit_code: int, signal: int, state: str, reason: str | None
) -> None:
    job_id = queued(gw)[0]
    slurm_id = gw.slurm_id(job_id)
    fake.start(slurm_id)
    fake.finish(slurm_id, slurm_state, exit_code=exit_code, signal=signal)
    gw.cycle()
    job = gw.job(job_id)
    assert (job.state, job.slurm_state, job.reason, job.exit_code) == (state, slurm_state, reason, exit_code)
    assert gw.history(job_id)[-1] == state
    # A time-out is a state Slurm may come back from: slurmctld was asked, in the same cycle.
    assert fake.count("squeue", "--json") == (1 if slurm_state == "TIMEOUT" else 0)


def test_a_cancelled_pending_job_skips_the_phases_it_never_had(gw: Gateway, fake: FakeSlurm) -> None:
    job_id = queued(gw)[0]
    fake.finish(gw.slurm_id(job_id), "CANCELLED")
    gw.cycle()
    assert gw.history(job_id) == ["accepted", "queued", "cancelled"]
    assert gw.job(job_id).start_time is None


def test_sacct_down_falls_back_to_scontrol_and_fails_nothing(gw: Gateway, fake: FakeSlurm) -> None:
    running, done, forgotten = queued(gw, 2) + queued(gw, 1, "team-b")
    for job_id in (running, done, forgotten):
        fake.start(gw.slurm_id(job_id))
    gw.cycle()
    fake.finish(gw.slurm_id(done))
    fake.finish(gw.slurm_id(forgotten), "FAILED", exit_code=1)
    fake.forget(gw.slurm_id(forgotten))  # only accounting, which is down, still knows it
    fake.fail("sacct", "down")
    gw.markers(running).write_started(size=1, restart=0)
    gw.cycle(3)
    assert gw.state(running) == "running"  # slurmctld's word still moves jobs on
    assert gw.state(done) == "succeeded"
    assert gw.state(forgotten) == "launching"  # unknown is not failed
    health = gw.worker.health()
    assert health["tracking_source"] == "scontrol" and health["accounting"].startswith("unavailable")
    assert fake.count("squeue", "--json") == 3

    fake.heal()
    gw.cycle()
    assert gw.state(forgotten) == "failed"
    assert gw.worker.health()["accounting"] == "ok"


def test_sacct_and_scontrol_down_change_nothing(gw: Gateway, fake: FakeSlurm) -> None:
    ids = queued(gw, 2)
    fake.start(gw.slurm_id(ids[0]))
    gw.cycle()
    before = {i: (gw.job(i).state, gw.job(i).slurm_state, gw.history(i)) for i in ids}
    fake.finish(gw.slurm_id(ids[0]), "FAILED", exit_code=1)
    fake.finish(gw.slurm_id(ids[1]), "CANCELLED")
    fake.fail("sacct", "down")
    fake.fail("squeue", "unreachable")  # slurmctld's jobs come from squeue --json
    assert gw.cycle(3) is False
    assert {i: (gw.job(i).state, gw.job(i).slurm_state, gw.history(i)) for i in ids} == before
    assert gw.worker.health()["tracking_source"] == "none"
    assert "squeue failed" in (gw.worker.health(detailed=True)["last_error"] or "")


def test_a_requeued_job_says_why_and_runs_again(gw: Gateway, fake: FakeSlurm) -> None:
    job_id = queued(gw)[0]
    slurm_id = gw.slurm_id(job_id)
    fake.start(slurm_id, node_list="n[1-2]")
    gw.cycle()
    fake.nodes["n2"] = "down*"
    fake.requeue(slurm_id, "NODE_FAIL")
    gw.cycle()
    job = gw.job(job_id)
    assert (job.state, job.restarts) == ("requeued", 1)
    assert job.reason == "node n2 failed; requeued by Slurm (restart 1)"
    assert fake.count("sinfo") == 2  # the partitions at the first cycle, then the failed node's
    fake.start(slurm_id, node_list="n[1,3]")
    gw.markers(job_id).write_started(size=1, restart=1)
    fake.finish(slurm_id)
    gw.cycle()
    assert gw.history(job_id) == ["accepted", "queued", "launching", "requeued", "launching", "running", "succeeded"]
    # each run's row: the first written when the job started, updated when its node failed; the second new
    runs = [(a.number, a.slurm_state, a.node_list, a.slurm_job_id, a.end_time is not None) for a in gw.attempts(job_id)]
    assert runs == [(0, "NODE_FAIL", "n[1-2]", slurm_id, True), (1, "COMPLETED", "n[1,3]", slurm_id, True)]


@pytest.mark.parametrize("stale_first", [True, False], ids=["stale-row-first", "stale-row-last"])
def test_a_pending_range_accounting_has_not_updated_is_not_an_earlier_run(
    gw: Gateway, fake: FakeSlurm, stale_first: bool
) -> None:
    """Seen on the local cluster: an element had started (its own row, RUNNING) while accounting still printed it in
    the array's pending range (``523_[1-2]``, PENDING). Two rows are not two runs: the job was not requeued."""
    sweep = gw.sweep([0, 1, 2], max_parallel=2)
    gw.cycle()
    array = master_id(gw.tasks(sweep)[0].slurm_job_id or "")
    fake.lag_pending_range(array, first=stale_first)
    fake.start(f"{array}_1")
    gw.cycle()
    first, second, third = gw.tasks(sweep)
    assert [t.state for t in (first, second, third)] == ["queued", "launching", "queued"]
    fake.finish(f"{array}_1")
    gw.cycle()
    fake.catch_up()
    gw.cycle()
    assert gw.history(second.id) == ["accepted", "queued", "launching", "succeeded"]
    assert (gw.job(second.id).restarts, [a.number for a in gw.attempts(second.id)]) == (0, [0])
    assert gw.history(first.id) == gw.history(third.id) == ["accepted", "queued"]
    assert gw.job(first.id).restarts == gw.job(third.id).restarts == 0


@pytest.mark.parametrize("raw", ["UPDATE_DB", "BRAND_NEW_STATE"])
def test_a_state_the_table_lacks_marks_that_job_alone(gw: Gateway, fake: FakeSlurm, raw: str) -> None:
    """One job in a state launchers.states does not know: it shows as unknown with Slurm's name and is polled
    again; the other teams' jobs in the same cycle and chunk are tracked to their end meanwhile."""
    odd, other = queued(gw, 1, "team-a")[0], queued(gw, 1, "team-b")[0]
    fake.start(gw.slurm_id(odd))
    fake.job(gw.slurm_id(odd)).run.state = raw
    fake.start(gw.slurm_id(other))
    fake.finish(gw.slurm_id(other), "COMPLETED")
    gw.cycle()
    job = gw.job(odd)
    assert (job.state, job.slurm_state, job.tracking_error) == ("unknown", raw, None)
    assert job.reason is not None and raw in job.reason
    assert gw.events(odd)[-1].slurm_state == raw
    assert gw.state(other) == "succeeded"
    fake.finish(gw.slurm_id(odd), "COMPLETED")  # Slurm moves on: the next poll follows it
    gw.cycle()
    assert gw.state(odd) == "succeeded"
    assert gw.history(odd)[-2:] == ["unknown", "succeeded"]
