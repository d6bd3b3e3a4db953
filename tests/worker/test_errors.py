"""How sbatch's failures are told apart: Slurm not answering (the jobs wait, /healthz says so) versus Slurm
refusing the job (it fails, with sbatch's own words)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from tests.gateway.conftest import auth, job_body, make_config
from tests.worker.conftest import Gateway, teams
from tests.worker.fakeslurm import REFUSED, SBATCH_UNREACHABLE, FakeSlurm

NOT_ANSWERING = ["unreachable", "timeout", "missing"]


@pytest.mark.parametrize("kind", NOT_ANSWERING)
def test_slurm_not_answering_keeps_jobs_accepted_until_it_answers(gw: Gateway, fake: FakeSlurm, kind: str) -> None:
    first, second = gw.submit(), gw.submit()
    fake.fail("sbatch", kind)
    gw.cycle()
    for job_id in (first, second):
        job = gw.job(job_id)
        assert (job.state, job.dispatching, job.slurm_job_id) == ("accepted", False, None)
        assert gw.history(job_id) == ["accepted"]
    assert gw.job(first).dispatch_error  # kept for the operator
    assert fake.count("sbatch") == 1  # the first failure ends this cycle's dispatching
    assert gw.worker.health()["slurm_reachable"] is False
    assert gw.worker.stats.last_error

    gw.cycle()  # still down: still waiting, never failed
    assert {gw.state(first), gw.state(second)} == {"accepted"}

    fake.heal("sbatch")
    gw.cycle()
    assert [gw.state(first), gw.state(second)] == ["queued", "queued"]
    assert gw.job(first).dispatch_error is None
    assert gw.worker.health()["slurm_reachable"] is True
    assert gw.history(first) == ["accepted", "queued"]


def test_controller_unreachable_message_is_sbatchs_own(gw: Gateway, fake: FakeSlurm) -> None:
    job_id = gw.submit()
    fake.fail("sbatch", "unreachable")
    gw.cycle()
    assert SBATCH_UNREACHABLE in (gw.job(job_id).dispatch_error or "")
    assert gw.state(job_id) == "accepted"


def test_a_refusal_fails_the_job_with_sbatchs_reason(gw: Gateway, fake: FakeSlurm) -> None:
    refused, later = gw.submit(), gw.submit(time_limit_min=30)  # two shapes: two sbatch calls
    fake.fail("sbatch", "refused", times=1)
    gw.cycle()
    job = gw.job(refused)
    assert job.state == "failed" and job.slurm_job_id is None and not job.dispatching
    assert job.reason is not None
    assert job.reason.startswith("sbatch refused the job:") and REFUSED in job.reason
    assert job.end_time is not None
    assert gw.history(refused) == ["accepted", "failed"]
    assert gw.events(refused)[-1].reason == job.reason
    assert gw.worker.health()["slurm_reachable"] is True  # Slurm answered: it said no
    assert gw.state(later) == "queued"  # a refusal is about that job only: the next one went out
    assert fake.count("sbatch") == 2


def test_a_refused_sweep_fails_every_task(gw: Gateway, fake: FakeSlurm) -> None:
    sweep = gw.sweep([1, 2, 3], max_parallel=2)
    fake.fail("sbatch", "refused")
    gw.cycle()
    tasks = gw.tasks(sweep)
    assert [t.state for t in tasks] == ["failed"] * 3
    assert all(REFUSED in (t.reason or "") for t in tasks)
    assert gw.sweep_row(sweep).array_ids == []


@pytest.mark.parametrize("kind", NOT_ANSWERING)
def test_a_sweep_waits_while_slurm_does_not_answer(gw: Gateway, fake: FakeSlurm, kind: str) -> None:
    sweep = gw.sweep([1, 2], max_parallel=2)
    fake.fail("sbatch", kind)
    gw.cycle(2)
    assert [(t.state, t.dispatching) for t in gw.tasks(sweep)] == [("accepted", False)] * 2
    fake.heal()
    gw.cycle()
    assert [t.state for t in gw.tasks(sweep)] == ["queued", "queued"]
    assert fake.count("sbatch") == 3


def test_array_size_unknown_and_slurm_down_keeps_a_sweep_waiting(gw: Gateway, fake: FakeSlurm) -> None:
    """No MaxArraySize read yet (scontrol down at the first cycle): the sweep asks again when it is sent."""
    fake.fail("scontrol", "unreachable")
    sweep = gw.sweep([1, 2], max_parallel=2)
    gw.cycle()
    assert [t.state for t in gw.tasks(sweep)] == ["accepted", "accepted"]
    assert gw.worker.health()["slurm_reachable"] is False
    assert fake.count("sbatch") == 0
    fake.heal()
    gw.cycle()
    assert [t.state for t in gw.tasks(sweep)] == ["queued", "queued"]


@pytest.fixture
def client(tmp_path: Path, fake: FakeSlurm) -> Iterator[TestClient]:
    config = make_config(tmp_path, f"sqlite:///{tmp_path}/gw.db", teams=teams())
    app = create_app(config, run_worker=False)
    with TestClient(app) as c:
        body = {
            "name": "intent-classifier",
            "version": "1.0",
            "image": "/images/intent-classifier.sif",
            "command": ["python", "train.py"],
            "local_command": ["python", "train.py"],
            "team": "team-a",
        }
        assert c.post("/v1/algorithms", json=body, headers=auth("admin")).status_code == 201  # an admin's (issue 29)
        yield c


def test_healthz_says_slurm_is_unreachable_and_the_api_shows_the_job_waiting(
    client: TestClient, fake: FakeSlurm
) -> None:
    worker = client.app.state.worker  # type: ignore[attr-defined]
    response = client.post("/v1/jobs", json=job_body(), headers=auth("alice"))
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]
    fake.fail("sbatch", "unreachable")
    worker.run_cycle()
    health = client.get("/healthz").json()
    assert health["slurm_reachable"] is False
    assert client.get(f"/v1/jobs/{job_id}", headers=auth("alice")).json()["state"] == "accepted"

    fake.heal()
    worker.run_cycle()
    assert client.get("/healthz").json()["slurm_reachable"] is True
    shown = client.get(f"/v1/jobs/{job_id}", headers=auth("alice")).json()
    assert (shown["state"], shown["slurm_job_id"]) == ("queued", "100")


def test_slurms_submit_limit_keeps_the_job_waiting_with_the_reason(gw: Gateway, fake: FakeSlurm) -> None:
    """sbatch's words when the team's account holds GrpSubmitJobs jobs already (captured on the local cluster)."""
    job_id = gw.submit()
    limit = (
        "sbatch: error: Batch job submission failed: "
        "Job violates accounting/QOS policy (job submit limit, user's size and/or time limits)"
    )
    fake.fail("sbatch", "refused", stderr=limit)
    gw.cycle()
    job = gw.job(job_id)
    assert (job.state, job.dispatching, job.slurm_job_id) == ("accepted", False, None)
    assert job.reason == "waiting: Slurm's submit limit of account team-a is reached (GrpSubmitJobs)"
    fake.heal("sbatch")
    gw.cycle()
    assert gw.state(job_id) == "queued"
