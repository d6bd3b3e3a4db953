"""The intake's group commit (gateway.submit.intake): requests stored together keep their own outcomes, the team's
backlog and idempotency keys hold inside a group as across groups, and a failing database or a key that another process
stored first is answered, never left hanging."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from gateway.errors import InvalidRequestError, QueueFullError
from gateway.schemas import JobCreate
from gateway.site.auth import Principal
from gateway.store import rows
from gateway.store.models import Job, JobEvent
from gateway.submit.intake import Accepted, Intake, Submission
from tests.gateway.conftest import auth, job_body

ALICE = Principal(user="alice", team="team-a", admin=False)


@pytest.fixture
def app_client(client: TestClient, algorithm: dict[str, Any]) -> TestClient:
    return client


def submission(**overrides: object) -> Submission:
    return Submission(ALICE, JobCreate.model_validate(job_body(**overrides)), {})


def counts(client: TestClient) -> tuple[int, int]:
    with Session(client.app.state.engine) as session:  # type: ignore[attr-defined]
        jobs = session.execute(select(func.count()).select_from(Job)).scalar_one()
        events = session.execute(select(func.count()).select_from(JobEvent)).scalar_one()
    return jobs, events


def test_one_group_keeps_each_requests_outcome_its_keys_and_the_teams_backlog(app_client: TestClient) -> None:
    intake: Intake = app_client.app.state.intake  # type: ignore[attr-defined]
    items = [
        submission(name="first", idempotency_key="same"),
        submission(name="again", idempotency_key="same"),  # the same key in the same group: the first's job
        submission(name="bad", algorithm="no-such-algorithm"),
        *[submission(name=f"n{i}") for i in range(6)],  # team-a queues 5 at most: 4 more fit
    ]
    outcomes = asyncio.run(intake.submit(items))  # one call: one group, one transaction
    first, again, bad, *rest = outcomes
    assert isinstance(first, Accepted) and first.created
    assert isinstance(again, Accepted) and not again.created and again.job.id == first.job.id
    assert isinstance(bad, InvalidRequestError) and bad.field == "algorithm"
    assert [isinstance(o, Accepted) and o.created for o in rest] == [True] * 4 + [False] * 2
    assert all(isinstance(o, QueueFullError) for o in rest[4:])
    assert counts(app_client) == (5, 5)  # each stored job with the first event of its history, nothing more


def test_requests_sent_at_once_are_each_stored_once(app_client: TestClient) -> None:
    intake: Intake = app_client.app.state.intake  # type: ignore[attr-defined]
    intake.config.teams["team-a"].max_queued_jobs = 100

    async def send() -> list[Any]:
        return await asyncio.gather(*(intake.submit([submission(name=f"c{i}")]) for i in range(40)))

    outcomes = [o for [o] in asyncio.run(send())]
    assert all(isinstance(o, Accepted) and o.created for o in outcomes)
    assert len({o.job.id for o in outcomes}) == 40
    assert counts(app_client) == (40, 40)
    assert intake.submissions == 40 and 1 <= intake.groups <= 40
    listed = app_client.get("/v1/jobs?limit=100", headers=auth("alice")).json()
    assert sorted(j["name"] for j in listed["items"]) == sorted(f"c{i}" for i in range(40))


def test_a_database_error_is_answered_503_and_the_intake_goes_on(
    app_client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = rows.insert_jobs
    calls = []

    def failing_once(connection: Any, jobs: list[dict[str, Any]]) -> None:
        calls.append(len(jobs))
        if len(calls) == 1:
            raise OperationalError("INSERT", {}, Exception("database is locked"))
        real(connection, jobs)

    monkeypatch.setattr(rows, "insert_jobs", failing_once)
    refused = app_client.post("/v1/jobs", json=job_body(name="refused"), headers=auth("alice"))
    assert refused.status_code == 503, refused.text
    assert "Retry-After" in refused.headers
    stored = app_client.post("/v1/jobs", json=job_body(name="stored"), headers=auth("alice"))
    assert stored.status_code == 201, stored.text
    assert counts(app_client) == (1, 1)


def test_a_key_another_process_stored_first_is_answered_with_its_job(
    app_client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race between two API processes: both read the key as unused, one inserts first, the other's insert
    breaks the unique constraint. The loser reads again and answers 200 with the winner's job."""
    first = app_client.post("/v1/jobs", json=job_body(idempotency_key="raced"), headers=auth("alice"))
    assert first.status_code == 201, first.text
    real = rows.idempotent_id
    missed: list[str] = []

    def miss_once(connection: Any, team: str, user: str, key: str) -> str | None:
        if not missed:
            missed.append(key)
            return None  # as if the other process had not committed yet
        return real(connection, team, user, key)

    monkeypatch.setattr(rows, "idempotent_id", miss_once)
    second = app_client.post("/v1/jobs", json=job_body(idempotency_key="raced"), headers=auth("alice"))
    assert second.status_code == 200, second.text
    assert second.json()["id"] == first.json()["id"] and missed == ["raced"]
    assert counts(app_client) == (1, 1)


def test_a_batch_answers_each_job_at_its_index_as_a_lone_post_would(app_client: TestClient) -> None:
    """POST /v1/jobs/batch: one transaction, one answer per job in order; a refused job does not refuse the
    others, an idempotency key answers 200 with its job, and each stored job is listed and has its history."""
    earlier = app_client.post("/v1/jobs", json=job_body(name="earlier", idempotency_key="k1"), headers=auth("alice"))
    assert earlier.status_code == 201, earlier.text
    jobs = [
        job_body(name="b0"),
        job_body(name="again", idempotency_key="k1"),
        job_body(name="bad", algorithm="no-such-algorithm"),
        *[job_body(name=f"n{i}") for i in range(5)],  # team-a queues 5 at most: 1 earlier + b0 + 3 more fit
    ]
    answer = app_client.post("/v1/jobs/batch", json={"jobs": jobs}, headers=auth("alice"))
    assert answer.status_code == 200, answer.text
    items = answer.json()["items"]
    assert [i["status"] for i in items] == [201, 200, 422, 201, 201, 201, 429, 429]
    assert answer.json()["created"] == 4
    assert items[0]["job"]["name"] == "b0" and items[0]["job"]["state"] == "accepted" and items[0]["error"] is None
    assert items[1]["job"]["id"] == earlier.json()["id"]
    assert items[2]["job"] is None and items[2]["error"]["field"] == "algorithm"
    assert "max_queued_jobs" in items[6]["error"]["detail"] and items[6]["retry_after_s"] >= 5
    assert counts(app_client) == (5, 5)
    for item in items:
        if item["status"] == 201:
            got = app_client.get(f"/v1/jobs/{item['job']['id']}", headers=auth("alice"))
            assert got.status_code == 200 and got.json()["name"] == item["job"]["name"]


def test_a_batch_is_bounded_and_validated_as_a_whole(app_client: TestClient) -> None:
    empty = app_client.post("/v1/jobs/batch", json={"jobs": []}, headers=auth("alice"))
    assert empty.status_code == 422 and empty.json()["field"] == "jobs"
    too_many = app_client.post("/v1/jobs/batch", json={"jobs": [job_body()] * 1001}, headers=auth("alice"))
    assert too_many.status_code == 422 and too_many.json()["field"] == "jobs"
    malformed = app_client.post("/v1/jobs/batch", json={"jobs": [job_body(), job_body(nodes=0)]}, headers=auth("alice"))
    assert malformed.status_code == 422 and malformed.json()["field"] == "jobs.1.nodes"
    assert app_client.post("/v1/jobs/batch", json={"jobs": [job_body()]}).status_code == 401
    assert counts(app_client) == (0, 0)  # nothing of a refused request was stored


def test_a_batch_whose_database_fails_is_503_and_stores_nothing(
    app_client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(connection: Any, jobs: list[dict[str, Any]]) -> None:
        raise OperationalError("INSERT", {}, Exception("database is locked"))

    monkeypatch.setattr(rows, "insert_jobs", failing)
    refused = app_client.post("/v1/jobs/batch", json={"jobs": [job_body(), job_body()]}, headers=auth("alice"))
    assert refused.status_code == 503 and "Retry-After" in refused.headers
    assert counts(app_client) == (0, 0)
