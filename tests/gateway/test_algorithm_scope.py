"""Issue 29, hole 6: algorithms belong to their team (or are published by an admin), jobs keep the version they
resolved, and a command run outside any image is a site switch that only an admin may use."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from gateway.app import create_app
from gateway.config import GatewayConfig
from gateway.store.models import Job
from launchers.states import JobState
from tests.gateway.conftest import auth, job_body, make_config

BOB = auth("bob")


def version(name: str, number: str, marker: str, **extra: object) -> dict[str, object]:
    """A version whose local_command tells which one ran (the job's stored command)."""
    body = {"version": number, "image": f"/images/{name}.sif", "command": ["true"], "local_command": ["echo", marker]}
    return {"name": name, **body, **extra}


def later(name: str, number: str, marker: str) -> dict[str, object]:
    """A later version of ``name`` (POST …/versions)."""
    return {k: v for k, v in version(name, number, marker).items() if k != "name"}


@pytest.fixture
def config(tmp_path: Path, database_url: str) -> GatewayConfig:
    config = make_config(tmp_path, database_url)
    config.teams["team-a"].max_queued_jobs = 20
    return config


@pytest.fixture
def client(config: GatewayConfig) -> Iterator[TestClient]:
    with TestClient(create_app(config, run_worker=False)) as c:
        yield c


def register(client: TestClient, body: dict[str, object], user: str = "admin") -> dict[str, Any]:
    response = client.post("/v1/algorithms", json=body, headers=auth(user))
    assert response.status_code == 201, response.text
    return cast(dict[str, Any], response.json())


def test_another_teams_algorithm_is_as_unknown_as_a_missing_one(client: TestClient) -> None:
    register(client, version("a-clf", "1", "a1", team="team-a"))
    assert client.post("/v1/jobs", json=job_body(algorithm="a-clf"), headers=auth("alice")).status_code == 201
    for pinned in (None, "1"):
        theirs = client.post(
            "/v1/jobs", json=job_body(algorithm="a-clf", algorithm_version=pinned), headers=auth("bob")
        )
        missing = client.post(
            "/v1/jobs", json=job_body(algorithm="nothing", algorithm_version=pinned), headers=auth("bob")
        )
        assert theirs.status_code == missing.status_code == 422
        assert theirs.json()["detail"] == "unknown algorithm 'a-clf'" and theirs.json()["field"] == "algorithm"
    # an admin's job for team-b resolves team-b's algorithms too, not team-a's
    as_admin = client.post("/v1/jobs", json=job_body(algorithm="a-clf", team="team-b"), headers=auth("admin"))
    assert as_admin.status_code == 422
    assert client.get("/v1/algorithms", headers=auth("bob")).json() == []
    added = client.post("/v1/algorithms/a-clf/versions", json=later("a-clf", "2", "b2"), headers=auth("bob"))
    assert added.status_code == 404
    assert [a["name"] for a in client.get("/v1/algorithms", headers=auth("admin")).json()] == ["a-clf"]


def test_a_teams_new_version_never_reaches_another_teams_jobs(client: TestClient) -> None:
    """Each team's unpinned job runs its own algorithm's current version; a published one changes only by an
    admin's hand, and a team cannot publish, nor add a version to what was published."""
    register(client, version("clf", "1", "published-1", shared=True))
    register(client, version("b-clf", "1", "b1", team="team-b"))
    pushed = client.post("/v1/algorithms/clf/versions", json=later("clf", "2", "alice-2"), headers=auth("alice"))
    assert pushed.status_code == 403
    plain = {k: v for k, v in later("clf", "2", "x").items() if k != "local_command"}
    assert client.post("/v1/algorithms/clf/versions", json=plain, headers=auth("alice")).status_code == 403
    publish = {k: v for k, v in version("mine", "1", "x", shared=True).items() if k != "local_command"}
    assert client.post("/v1/algorithms", json=publish, headers=auth("alice")).status_code == 403
    for algorithm in ("clf", "b-clf"):
        job = client.post("/v1/jobs", json=job_body(algorithm=algorithm), headers=auth("bob")).json()
        assert job["algorithm_version"] == "1", job
    with Session(client.app.state.engine) as session:  # type: ignore[attr-defined]
        commands = sorted(tuple(j.command) for j in session.exec(select(Job).where(Job.team == "team-b")))
    assert commands == [("echo", "b1"), ("echo", "published-1")]


def test_local_commands_are_an_admins_and_a_site_switch(config: GatewayConfig, client: TestClient) -> None:
    refused = client.post("/v1/algorithms", json=version("own", "1", "x"), headers=auth("alice"))
    assert refused.status_code == 403 and "admin" in refused.json()["detail"]
    register(client, version("a-clf", "1", "a1", team="team-a"))
    config.algorithms.teams = ["team-b"]
    only_b = client.post("/v1/jobs", json=job_body(algorithm="a-clf"), headers=auth("alice"))
    assert only_b.status_code == 403 and "algorithms.teams" in only_b.json()["detail"]
    config.algorithms.teams = None
    config.algorithms.local_commands = False
    off = client.post("/v1/jobs", json=job_body(algorithm="a-clf"), headers=auth("alice"))
    assert off.status_code == 403 and "local_commands is off" in off.json()["detail"]
    batch = client.post("/v1/jobs/batch", json={"jobs": [job_body(algorithm="a-clf")]}, headers=auth("alice"))
    assert batch.json()["items"][0]["status"] == 403 and batch.json()["created"] == 0
    again = client.post("/v1/algorithms", json=version("b-clf", "1", "b1", team="team-b"), headers=auth("admin"))
    assert again.status_code == 403
    with Session(client.app.state.engine) as session:  # type: ignore[attr-defined]
        assert session.exec(select(Job)).all() == []


def test_a_sweeps_retry_runs_the_pinned_version_as_the_tasks_own_user(client: TestClient) -> None:
    register(client, version("clf", "1", "v1", shared=True))
    sweep = client.post(
        "/v1/sweeps",
        json={"base": job_body(algorithm="clf"), "space": {"kind": "list", "points": [{"LR": 1}]}, "max_parallel": 1},
        headers=auth("alice"),
    ).json()
    with Session(client.app.state.engine) as session:  # type: ignore[attr-defined]
        task = session.get(Job, sweep["tasks"][0]["job_id"])
        assert task is not None
        task.state = JobState.FAILED
        session.add(task)
        session.commit()
    assert client.post("/v1/algorithms/clf/versions", json=later("clf", "2", "v2"), headers=auth("admin")).is_success
    retried = client.post(f"/v1/sweeps/{sweep['id']}/retry-failed", headers=auth("admin"))
    assert retried.status_code == 200, retried.text
    job = client.get(f"/v1/jobs/{retried.json()['tasks'][0]['job_id']}", headers=auth("admin")).json()
    assert job["algorithm_version"] == "1" and job["user"] == "alice"
    with Session(client.app.state.engine) as session:  # type: ignore[attr-defined]
        stored = session.get(Job, job["id"])
        assert stored is not None and stored.command == ["echo", "v1"]
    rerun = client.post(f"/v1/jobs/{job['id']}/rerun", headers=auth("alice")).json()
    assert rerun["algorithm_version"] == "1"


def test_an_admin_publishes_a_teams_algorithm_for_every_team(client: TestClient) -> None:
    """How a registry from before scoping gives other teams back what they ran: an admin's decision alone."""
    register(client, version("a-clf", "1", "a1", team="team-a"))
    assert client.post("/v1/algorithms/a-clf/publish", headers=auth("alice")).status_code == 403
    assert client.post("/v1/algorithms/nothing/publish", headers=auth("admin")).status_code == 404
    published = client.post("/v1/algorithms/a-clf/publish", headers=auth("admin"))
    assert published.status_code == 200 and published.json()["shared"] is True and published.json()["team"] is None
    assert client.post("/v1/jobs", json=job_body(algorithm="a-clf"), headers=BOB).status_code == 201
    plain = {k: v for k, v in later("a-clf", "2", "x").items() if k != "local_command"}
    assert client.post("/v1/algorithms/a-clf/versions", json=plain, headers=auth("alice")).status_code == 403


def test_an_algorithms_owner_is_resolved_like_a_jobs_team(client: TestClient) -> None:
    """One resolver for every request's team: an admin must name an existing team, a team only its own."""
    unknown = client.post("/v1/algorithms", json=version("z-clf", "1", "z", team="team-z"), headers=auth("admin"))
    assert unknown.status_code == 422 and "unknown team 'team-z'" in unknown.text, unknown.text
    unnamed = client.post("/v1/algorithms", json=version("z-clf", "1", "z"), headers=auth("admin"))
    assert unnamed.status_code == 422 and "must name the team" in unnamed.text, unnamed.text
    other = client.post("/v1/algorithms", json=version("z-clf", "1", "z", team="team-a"), headers=BOB)
    assert other.status_code == 422 and "only an admin token may name a team" in other.text, other.text
    assert client.get("/v1/algorithms", headers=auth("admin")).json() == []  # nothing was registered
    mine = client.post("/v1/algorithms", json={**version("z-clf", "1", "z"), "local_command": None}, headers=BOB)
    assert mine.status_code == 201 and mine.json()["team"] == "team-b", mine.text
