"""The HTTP API with TestClient and a fresh database, on SQLite and PostgreSQL. No Slurm here: the worker is off."""

from __future__ import annotations

from typing import Any, cast

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from launchers.slurm.sinfo import PartitionSize
from tests.gateway.conftest import auth, job_body


def test_requests_need_a_valid_token(client: TestClient) -> None:
    assert client.get("/v1/jobs").status_code == 401
    assert client.get("/v1/jobs", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get("/v1/jobs", headers={"Authorization": "Basic abc"}).status_code == 401
    assert client.get("/v1/jobs", headers=auth("alice")).status_code == 200


def test_submit_is_accepted_and_records_who_from_the_token(client: TestClient, algorithm: dict[str, Any]) -> None:
    response = client.post("/v1/jobs", json=job_body(), headers=auth("alice"))
    assert response.status_code == 201, response.text
    job = response.json()
    assert (job["state"], job["team"], job["user"]) == ("accepted", "team-a", "alice")
    assert job["slurm_job_id"] is None and job["partition"] == "team-a" and job["account"] == "team-a"
    assert job["parameters"] == {"LR": "0.1", "EPOCHS": "2"}
    assert job["algorithm_version"] == "1.0" and job["image"] == "/images/intent-classifier.sif"
    assert job["resources"]["nodes"] == 1
    # a non-admin cannot name another team
    other = client.post("/v1/jobs", json=job_body(team="team-b"), headers=auth("alice"))
    assert other.status_code == 422 and other.json()["field"] == "team"


def test_other_teams_jobs_are_not_found_admins_see_all(client: TestClient, algorithm: dict[str, Any]) -> None:
    job = client.post("/v1/jobs", json=job_body(), headers=auth("alice")).json()
    assert client.get(f"/v1/jobs/{job['id']}", headers=auth("bob")).status_code == 404
    assert client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth("bob")).status_code == 404
    assert client.get(f"/v1/jobs/{job['id']}", headers=auth("admin")).status_code == 200
    assert client.get("/v1/jobs", headers=auth("bob")).json()["total"] == 0
    assert client.get("/v1/jobs", headers=auth("admin")).json()["total"] == 1
    admin_job = client.post("/v1/jobs", json=job_body(team="team-b"), headers=auth("admin")).json()
    assert admin_job["team"] == "team-b" and admin_job["user"] == "admin"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"algorithm": "nope"}, "algorithm"),
        ({"algorithm_version": "9.9"}, "algorithm_version"),
        ({"dataset_id": "missing"}, "dataset_id"),
        ({"train_data_version_hash": "deadbeef"}, "train_data_version_hash"),
        ({"parameters": {"lr": 1}}, "parameters"),
        ({"parameters": {"TRAINING_DATA_PATH": "/etc"}}, "parameters"),
        ({"parameters": {"SLURM_NTASKS": "1"}}, "parameters"),
        ({"parameters": {"JOB_ID": "x"}}, "parameters"),
        ({"nodes": 3}, "nodes"),
        ({"nodes": 10**9}, "nodes"),
        ({"gpus_per_node": 1}, "gpus_per_node"),
        ({"nodes": -1}, "nodes"),
        ({"partition": "team-b"}, "partition"),
        ({"surprise": 1}, "surprise"),
        ({"parameters": {f"P{i}": i for i in range(10_000)}}, "parameters"),
    ],
)
def test_bad_requests_are_422_naming_the_field(
    client: TestClient, algorithm: dict[str, Any], overrides: dict[str, Any], field: str
) -> None:
    response = client.post("/v1/jobs", json=job_body(**overrides), headers=auth("alice"))
    assert response.status_code == 422, response.text
    assert field in response.text


def test_partition_size_is_checked_from_the_trackers_view(client: TestClient, algorithm: dict[str, Any]) -> None:
    cast(FastAPI, client.app).state.worker.partition_sizes = {
        "team-a": PartitionSize(nodes=2, max_cpus=2, max_mem_mb=0)
    }
    response = client.post("/v1/jobs", json=job_body(tasks_per_node=3), headers=auth("alice"))
    assert response.status_code == 422 and response.json()["field"] == "tasks_per_node"


def test_invalid_json_and_oversized_bodies(client: TestClient, algorithm: dict[str, Any]) -> None:
    bad = client.post("/v1/jobs", content=b"{not json", headers={**auth("alice"), "Content-Type": "application/json"})
    assert bad.status_code == 422
    huge = client.post(
        "/v1/jobs", content=b"x" * (2 << 20), headers={**auth("alice"), "Content-Type": "application/json"}
    )
    assert huge.status_code == 413


def test_shell_syntax_is_stored_literally(client: TestClient, algorithm: dict[str, Any]) -> None:
    values = {"A": "$(rm -rf /)", "B": "`id`", "C": "x; reboot", "D": "a\n#SBATCH --nodes=99"}
    job = client.post("/v1/jobs", json=job_body(parameters=values), headers=auth("alice")).json()
    assert client.get(f"/v1/jobs/{job['id']}", headers=auth("alice")).json()["parameters"] == values


def test_idempotency_key_returns_the_same_job(client: TestClient, algorithm: dict[str, Any]) -> None:
    first = client.post("/v1/jobs", json=job_body(idempotency_key="k-1"), headers=auth("alice"))
    again = client.post("/v1/jobs", json=job_body(idempotency_key="k-1"), headers=auth("alice"))
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    assert client.get("/v1/jobs", headers=auth("alice")).json()["total"] == 1


def test_team_backlog_is_bounded(client: TestClient, algorithm: dict[str, Any]) -> None:
    for _ in range(5):
        assert client.post("/v1/jobs", json=job_body(), headers=auth("alice")).status_code == 201
    assert client.post("/v1/jobs", json=job_body(), headers=auth("alice")).status_code == 429


def test_list_filters_and_pages(client: TestClient, algorithm: dict[str, Any]) -> None:
    ids = [client.post("/v1/jobs", json=job_body(name=f"j{i}"), headers=auth("alice")).json()["id"] for i in range(4)]
    client.post(f"/v1/jobs/{ids[0]}/cancel", headers=auth("alice"))
    page = client.get("/v1/jobs?limit=2&offset=1", headers=auth("alice")).json()
    assert page["total"] == 4 and len(page["items"]) == 2
    cancelled = client.get("/v1/jobs?state=cancelled", headers=auth("alice")).json()
    assert [j["id"] for j in cancelled["items"]] == [ids[0]]
    assert client.get("/v1/jobs?state=bogus", headers=auth("alice")).status_code == 422


def test_cancel_an_accepted_job(client: TestClient, algorithm: dict[str, Any]) -> None:
    job = client.post("/v1/jobs", json=job_body(), headers=auth("alice")).json()
    cancelled = client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth("alice"))
    assert cancelled.json()["state"] == "cancelled"
    assert client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth("alice")).status_code == 409


def test_rerun_copies_the_recorded_inputs(client: TestClient, algorithm: dict[str, Any]) -> None:
    job = client.post("/v1/jobs", json=job_body(parameters={"SEED": 3}), headers=auth("alice")).json()
    client.post(
        "/v1/algorithms/intent-classifier/versions",
        headers=auth("admin"),
        json={
            "version": "2.0",
            "image": "/images/v2.sif",
            "command": ["python", "t.py"],
            "local_command": ["python", "t.py"],
        },
    )
    again = client.post(f"/v1/jobs/{job['id']}/rerun", headers=auth("alice")).json()
    assert again["rerun_of"] == job["id"] and again["id"] != job["id"]
    for key in (
        "algorithm",
        "algorithm_version",
        "image",
        "dataset_id",
        "train_data_version_hash",
        "parameters",
        "resources",
        "partition",
    ):
        assert again[key] == job[key], key
    assert again["algorithm_version"] == "1.0"  # pinned, although 2.0 is current now


def test_algorithm_registry(client: TestClient, algorithm: dict[str, Any]) -> None:
    assert algorithm["current_version"] == "1.0" and algorithm["team"] is None and algorithm["shared"] is True
    dup = client.post(
        "/v1/algorithms",
        headers=auth("alice"),
        json={"name": "intent-classifier", "version": "1", "image": "x", "command": ["x"]},
    )
    assert dup.status_code == 409
    own = {"name": "a-clf", "version": "1", "image": "x", "command": ["x"]}
    assert client.post("/v1/algorithms", headers=auth("alice"), json=own).json()["team"] == "team-a"
    by_other_team = client.post(
        "/v1/algorithms/a-clf/versions",
        headers=auth("bob"),
        json={"version": "3", "image": "x", "command": ["x"]},
    )
    assert by_other_team.status_code == 404
    v2 = client.post(
        "/v1/algorithms/a-clf/versions",
        headers=auth("alice"),
        json={"version": "2.0", "image": "/images/v2.sif", "command": ["python", "t.py"]},
    )
    assert v2.status_code == 201 and v2.json()["current_version"] == "2.0"
    listed = client.get("/v1/algorithms", headers=auth("alice")).json()
    assert [a["name"] for a in listed] == ["a-clf", "intent-classifier"]
    assert [v["version"] for v in listed[0]["versions"]] == ["1", "2.0"]
    assert [a["name"] for a in client.get("/v1/algorithms", headers=auth("bob")).json()] == ["intent-classifier"]


def test_teams_health_and_metrics(client: TestClient, algorithm: dict[str, Any]) -> None:
    client.post("/v1/jobs", json=job_body(), headers=auth("alice"))
    teams = client.get("/v1/teams", headers=auth("alice")).json()
    assert [t["name"] for t in teams] == ["team-a"] and teams[0]["jobs_by_state"] == {"accepted": 1}
    assert len(client.get("/v1/teams", headers=auth("admin")).json()) == 2
    health = client.get("/healthz").json()
    assert health["database"] == "ok" and health["accounting"] == "ok"
    text = client.get("/metrics", headers=auth("admin")).text
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert samples[("hpcgw_jobs", (("state", "accepted"), ("team", "team-a")))] == 1
    assert "hpcgw_poll_cycle_seconds_count" in text and "hpcgw_queue_wait_seconds_sum" in text
    assert client.get("/docs").status_code == 200 and client.get("/openapi.json").status_code == 200


def test_a_unique_id_prefix_finds_the_job(
    client: TestClient, algorithm: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import gateway.submit.job_requests

    chosen = iter(["abcdef0100000000", "abcdef0200000000"])  # two ids that share their first 7 digits
    monkeypatch.setattr(gateway.submit.job_requests, "new_id", lambda: next(chosen))
    for _ in range(2):
        assert client.post("/v1/jobs", json=job_body(), headers=auth("alice")).status_code == 201
    ambiguous = client.get("/v1/jobs/abcdef0", headers=auth("alice"))
    assert ambiguous.status_code == 409 and "prefix of 2 jobs" in ambiguous.json()["detail"]
    one = client.get("/v1/jobs/abcdef02", headers=auth("alice"))
    assert one.status_code == 200 and one.json()["id"] == "abcdef0200000000"
    assert client.get("/v1/jobs/abcdef02/metrics", headers=auth("alice")).json()["job_id"] == "abcdef0200000000"
    assert client.get("/v1/jobs/abc", headers=auth("alice")).status_code == 404  # under 4 digits: no prefix
    assert client.get("/v1/jobs/abcdef02", headers=auth("bob")).status_code == 404  # not bob's to see
