"""The API's promises without Slurm: one error body everywhere, declared statuses, bounded inputs, rate limits."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.api.ratelimit import RateLimiter
from gateway.config import RateConfig
from gateway.errors import RateLimitedError
from tests.gateway.conftest import auth, job_body, make_config
from tests.gateway.support import rate_limited

ERROR_KEYS = {"detail", "field", "problems"}


def test_every_error_status_is_declared_with_the_one_error_body(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in document["components"]["schemas"]
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            errors = {code: r for code, r in operation["responses"].items() if code.startswith(("4", "5"))}
            assert errors, (method, path)
            for code, response in errors.items():
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path, code)
            if path.startswith("/v1/"):
                assert {"401", "503"} <= set(errors), (method, path)
    submit = document["paths"]["/v1/jobs"]["post"]
    assert {"200", "201", "400", "401", "413", "422", "429", "503"} <= set(submit["responses"])
    assert "Retry-After" in submit["responses"]["429"]["headers"]
    assert submit["operationId"] == "submit_job"


def test_fastapis_own_validation_errors_use_the_one_body(client: TestClient, algorithm: dict[str, Any]) -> None:
    response = client.post("/v1/jobs", json=job_body(nodes=0, tasks_per_node="x"), headers=auth("alice"))
    body = response.json()
    assert response.status_code == 422 and set(body) == ERROR_KEYS
    assert {p["field"] for p in body["problems"]} == {"nodes", "tasks_per_node"}
    assert body["field"] in ("nodes", "tasks_per_node") and "(and 1 more)" in body["detail"]
    domain = client.post("/v1/jobs", json=job_body(algorithm="nope"), headers=auth("alice")).json()
    assert set(domain) == ERROR_KEYS and domain["field"] == "algorithm" and domain["problems"] == []


@pytest.mark.parametrize(
    "wrong",
    [{"nodes": True}, {"nodes": 2.0}, {"requeue": 1}, {"time_limit_min": "30"}, {"health": {"max_restarts": True}}],
)
def test_a_value_of_the_wrong_json_type_is_422_not_coerced(
    client: TestClient, algorithm: dict[str, Any], wrong: dict[str, Any]
) -> None:
    """Found by schemathesis through the batch endpoint: `"nodes": true` was taken as one node. The schema says
    integer, and a value of another JSON type is refused, alone or in a batch, before anything is stored."""
    field = next(iter(wrong))
    alone = client.post("/v1/jobs", json=job_body(**wrong), headers=auth("alice"))
    assert alone.status_code == 422 and alone.json()["field"].startswith(field), alone.text
    batch = client.post("/v1/jobs/batch", json={"jobs": [job_body(), job_body(**wrong)]}, headers=auth("alice"))
    assert batch.status_code == 422 and batch.json()["field"].startswith(f"jobs.1.{field}"), batch.text
    assert client.get("/v1/jobs", headers=auth("alice")).json()["total"] == 0


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/v1/jobs?offset=421310802591449442418688", 422),  # found by schemathesis: was a 500
        ("/v1/jobs?offset=-1", 422),
        ("/v1/jobs?limit=1001", 422),
        ("/v1/jobs?team=Team%20A", 422),
        ("/v1/jobs/not-an-id", 404),
        ("/v1/jobs/0123abcd/logs?lines=10001", 422),
        ("/v1/sweeps/0123abcd?best=loss", 422),
        ("/v1/no-such-thing", 404),
    ],
)
def test_inputs_are_bounded_before_the_database(client: TestClient, path: str, status: int) -> None:
    response = client.get(path, headers=auth("alice"))
    assert response.status_code == status and set(response.json()) == ERROR_KEYS, response.text


def test_a_wrong_method_is_405_listing_every_method_of_the_path(client: TestClient) -> None:
    for path, allowed in (("/v1/jobs", "GET, POST"), ("/v1/jobs/render", "POST"), ("/v1/algorithms", "GET, POST")):
        response = client.delete(path, headers=auth("alice"))
        assert response.status_code == 405 and response.headers["Allow"] == allowed, (path, response.headers)
        assert set(response.json()) == ERROR_KEYS


def test_unauthenticated_is_401_in_the_one_body(client: TestClient) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"}):
        response = client.get("/v1/jobs", headers=headers)
        assert response.status_code == 401 and response.headers["WWW-Authenticate"] == "Bearer"
        assert set(response.json()) == ERROR_KEYS


@pytest.fixture
def limited(tmp_path: Path, database_url: str) -> Iterator[TestClient]:
    limits = {"per_token": {"per_min": 6, "burst": 3}, "per_team": {"per_min": 600, "burst": 4}}
    with rate_limited(tmp_path, database_url, limits) as client:
        yield client


def test_submissions_beyond_the_tokens_rate_are_429_with_retry_after(limited: TestClient) -> None:
    answers = [limited.post("/v1/jobs", json=job_body(), headers=auth("alice")) for _ in range(4)]
    assert [r.status_code for r in answers] == [201, 201, 201, 429]
    refused = answers[-1]
    assert 1 <= int(refused.headers["Retry-After"]) <= 10 and "rate limit of the token of alice" in refused.text
    first = answers[0].json()["id"]
    assert limited.post(f"/v1/jobs/{first}/rerun", headers=auth("alice")).status_code == 429  # reruns count too
    assert limited.get(f"/v1/jobs/{first}", headers=auth("alice")).status_code == 200  # reads never do


def test_the_team_bucket_holds_across_its_users() -> None:
    now = [0.0]
    config = make_config(
        Path("/tmp"),
        "sqlite://",
        rate_limits={"per_token": {"per_min": 60, "burst": 10}, "per_team": {"per_min": 60, "burst": 3}},
    )
    limiter = RateLimiter(config, clock=lambda: now[0])
    for user in ("alice", "alice2", "alice3"):
        limiter.admit(user, "team-a")
    with pytest.raises(RateLimitedError, match="rate limit of the team team-a") as refused:
        limiter.admit("alice4", "team-a")
    assert refused.value.retry_after_s == pytest.approx(1.0)
    limiter.admit("bob", "team-b")  # another team's bucket
    now[0] = 1.0  # refilled at 1 a second
    limiter.admit("alice4", "team-a")
    # the team's own rate, where it has one
    config.teams["team-b"].submit_rate = RateConfig(per_min=60, burst=1)
    limiter = RateLimiter(config, clock=lambda: now[0])
    limiter.admit("bob", "team-b")
    with pytest.raises(RateLimitedError, match="team team-b"):
        limiter.admit("bob", "team-b")


def test_each_job_of_a_batch_counts_against_the_rate_limit(limited: TestClient) -> None:
    answer = limited.post(
        "/v1/jobs/batch", json={"jobs": [job_body(name=f"j{i}") for i in range(5)]}, headers=auth("alice")
    )
    assert answer.status_code == 200, answer.text
    items = answer.json()["items"]
    assert [i["status"] for i in items] == [201, 201, 201, 429, 429]  # the token's burst is 3
    assert "rate limit of the token of alice" in items[3]["error"]["detail"] and items[3]["retry_after_s"] > 0
    assert limited.post("/v1/jobs", json=job_body(), headers=auth("alice")).status_code == 429
