"""/v1/sweeps with TestClient (no Slurm): validation, stored tasks, counts, best, cancel."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from gateway.app import create_app
from gateway.store.models import Job
from tests.gateway.conftest import auth, job_body, make_config


@pytest.fixture
def client(tmp_path: Path, database_url: str) -> Iterator[TestClient]:
    """Room in team-a's queue for the 6-task sweeps: a sweep's tasks count against max_queued_jobs (issue 29)."""
    config = make_config(tmp_path, database_url)
    config.teams["team-a"].max_queued_jobs = 20
    with TestClient(create_app(config, run_worker=False)) as c:
        yield c


def sweep_body(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "name": "grid",
        "base": job_body(parameters={"EPOCHS": 1}),
        "space": {"kind": "grid", "grid": {"LR": [0.1, 0.01], "BATCH_SIZE": [32, 64, 128]}},
        "max_parallel": 2,
    }
    return body | overrides


def test_a_sweep_stores_one_task_job_per_point(client: TestClient, algorithm: dict[str, Any]) -> None:
    response = client.post("/v1/sweeps", json=sweep_body(), headers=auth("alice"))
    assert response.status_code == 201, response.text
    sweep = response.json()
    assert sweep["task_count"] == 6 and sweep["counts"] == {"accepted": 6} and sweep["team"] == "team-a"
    assert [t["index"] for t in sweep["tasks"]] == list(range(6))
    assert sweep["tasks"][4]["parameters"] == {"EPOCHS": "1", "LR": "0.01", "BATCH_SIZE": "64"}
    task = client.get(f"/v1/jobs/{sweep['tasks'][4]['job_id']}", headers=auth("alice")).json()
    assert task["parameters"]["LR"] == "0.01" and task["name"] == "grid[4]"
    assert client.get(f"/v1/sweeps/{sweep['id']}", headers=auth("bob")).status_code == 404


def test_a_task_reruns_alone_as_a_plain_job(client: TestClient, algorithm: dict[str, Any]) -> None:
    """Found by schemathesis: a task's name (``grid[4]``) is not a valid request name, and rerun answered 500."""
    sweep = client.post("/v1/sweeps", json=sweep_body(), headers=auth("alice")).json()
    task = sweep["tasks"][4]
    response = client.post(f"/v1/jobs/{task['job_id']}/rerun", headers=auth("alice"))
    assert response.status_code == 201, response.text
    rerun = response.json()
    assert rerun["name"] == "grid-4" and rerun["rerun_of"] == task["job_id"]
    assert rerun["parameters"] == task["parameters"]


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"space": {"kind": "grid", "grid": {}}}, "empty"),
        ({"space": {"kind": "list", "points": []}}, "empty"),
        ({"space": {"kind": "grid", "grid": {f"P{i}": list(range(10)) for i in range(6)}}}, "100000"),
        ({"space": {"kind": "grid", "grid": {"lr": [1]}}}, "invalid parameter name"),
        ({"space": {"kind": "list", "points": [{"JOB_ID": 1}]}}, "reserved"),
        ({"max_parallel": 0}, "max_parallel"),
        ({"max_parallel": 3}, "max_parallel"),  # above team-a's max_running_jobs (2)
        ({"space": {"kind": "spiral"}}, "space"),
    ],
)
def test_bad_sweeps_are_422(
    client: TestClient, algorithm: dict[str, Any], overrides: dict[str, Any], needle: str
) -> None:
    response = client.post("/v1/sweeps", json=sweep_body(**overrides), headers=auth("alice"))
    assert response.status_code == 422, response.text
    assert needle in response.text


def test_best_task_and_cancel(client: TestClient, algorithm: dict[str, Any]) -> None:
    sweep = client.post("/v1/sweeps", json=sweep_body(), headers=auth("alice")).json()
    with Session(cast(FastAPI, client.app).state.engine) as session:
        for job in session.exec(select(Job).where(Job.sweep_id == sweep["id"])):
            job.metrics = [{"epoch": 1, "accuracy": 0.5}, {"epoch": 2, "accuracy": (job.task_index or 0) / 10}]
            session.add(job)
        session.commit()
    best = client.get(f"/v1/sweeps/{sweep['id']}?best=accuracy:max", headers=auth("alice")).json()["best"]
    assert best["index"] == 5 and best["final_metrics"]["accuracy"] == 0.5
    worst = client.get(f"/v1/sweeps/{sweep['id']}?best=accuracy:min", headers=auth("alice")).json()["best"]
    assert worst["index"] == 0
    assert client.get(f"/v1/sweeps/{sweep['id']}?best=accuracy", headers=auth("alice")).status_code == 422
    cancelled = client.post(f"/v1/sweeps/{sweep['id']}/cancel", headers=auth("alice")).json()
    assert cancelled["counts"] == {"cancelled": 6}
