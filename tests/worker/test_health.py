"""The health policy in the worker's cycle, on captured Slurm output: a verdict's scancel goes out in the cycle
that found it, the cancellation ends as the verdict's state, and a requeue widens ExcNodeList as the job's user."""

from __future__ import annotations

import time

from launchers.runtime.markers import write_atomic
from tests.worker.conftest import Gateway
from tests.worker.fakeslurm import FakeSlurm

HUNG_IN = {"hang_timeout_s": 5, "heartbeat_s": 1}


def running(gw: Gateway, fake: FakeSlurm, job_id: str, ranks: int = 1, node_list: str = "n1") -> None:
    gw.cycle()
    fake.start(gw.slurm_id(job_id), node_list=node_list)
    markers = gw.markers(job_id)
    markers.write_started(ranks, 0)
    gw.cycle()
    assert gw.state(job_id) == "running"


def stale_heartbeats(gw: Gateway, job_id: str, hosts: list[str], age_s: float, restart: int = 0) -> None:
    markers = gw.markers(job_id)
    past = time.time() - age_s
    for rank, host in enumerate(hosts):
        record = f'{{"rank": {rank}, "host": "{host}", "time": {past}, "progress": null, "progress_at": null}}'
        write_atomic(markers.heartbeat_path(rank, restart), record)
    started = markers.started()
    assert started is not None
    write_atomic(markers.started_path, f'{{"size": {len(hosts)}, "restart": {restart}, "time": {past - 1}}}')


def test_a_hang_is_cancelled_in_the_same_cycle_and_ends_as_hung(gw: Gateway, fake: FakeSlurm) -> None:
    job_id = gw.submit(health={**HUNG_IN, "on_hang": "stop"})
    running(gw, fake, job_id)
    stale_heartbeats(gw, job_id, ["n1"], age_s=30)
    gw.cycle()
    assert fake.calls_of("scancel") == [("scancel", gw.slurm_id(job_id))]
    job = gw.job(job_id)
    assert job.health_verdict == "hung" and job.health_reason and "no rank reported heartbeat" in job.health_reason
    gw.cycle()
    job = gw.job(job_id)
    assert (job.state, job.slurm_state) == ("hung", "CANCELLED") and job.reason == job.health_reason
    assert gw.history(job_id)[-1] == "hung"


def test_a_job_that_keeps_beating_is_left_alone(gw: Gateway, fake: FakeSlurm) -> None:
    job_id = gw.submit(health={**HUNG_IN, "on_hang": "stop"})
    running(gw, fake, job_id)
    stale_heartbeats(gw, job_id, ["n1"], age_s=1)
    gw.cycle(3)
    assert fake.count("scancel") == 0 and gw.state(job_id) == "running" and gw.job(job_id).health_verdict is None


def test_a_requeue_excludes_the_silent_node_and_is_recorded_on_the_attempt(gw: Gateway, fake: FakeSlurm) -> None:
    job_id = gw.submit(nodes=2, health={**HUNG_IN, "on_hang": "requeue", "max_restarts": 1})
    running(gw, fake, job_id, ranks=2, node_list="n[1-2]")
    markers = gw.markers(job_id)
    stale_heartbeats(gw, job_id, ["n1", "n2"], age_s=30)

    # Both ranks' last progress is 30 s old; rank 1 on n2 still beats (waiting in a collective), rank 0 on n1 went
    # silent: only n1 is left out.
    old = time.time() - 30
    beats = {0: ("n1", old), 1: ("n2", time.time())}
    for rank, (host, at) in beats.items():
        record = f'{{"rank": {rank}, "host": "{host}", "time": {at}, "progress": {{"step": 9}}, "progress_at": {old}}}'
        write_atomic(markers.heartbeat_path(rank, 0), record)
    gw.cycle()
    slurm_id = gw.slurm_id(job_id)
    assert fake.calls_of("scontrol", "requeuehold") == [("scontrol", "requeuehold", slurm_id)]
    assert fake.calls_of("scontrol", "update") == [("scontrol", "update", f"JobId={slurm_id}", "ExcNodeList=n1")]
    assert fake.calls_of("scontrol", "release") == [("scontrol", "release", slurm_id)]
    verbs = ("requeuehold", "update", "release")
    users = {
        user for (_, user), call in zip(fake.run_as, fake.calls, strict=True) if call[1:2] in [(v,) for v in verbs]
    }
    assert users == {"user-team-a"}
    job = gw.job(job_id)
    assert (job.state, job.health_restarts, job.excluded_nodes) == ("requeued", 1, "n1")
    gw.cycle()
    attempts = gw.attempts(job_id)
    assert attempts[0].ended_by is not None and "excludes n1" in attempts[0].ended_by
    assert fake.count("scontrol", "requeuehold") == 1  # asked once, not again while Slurm catches up
