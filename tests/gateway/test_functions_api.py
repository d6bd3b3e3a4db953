"""POST /v1/functions and GET /v1/jobs/{id}/outcome, without Slurm: the site switch, the payload kept as bytes
(never unpickled by the gateway), the spec the worker will submit, and the outcome's rules."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from gateway.app import create_app
from gateway.config import ConfigError, GatewayConfig
from gateway.store.models import Job
from gateway.submit.specs import job_spec
from tests.gateway.conftest import auth, make_config
from tests.gateway.support import NOT_A_PICKLE, function_body


@pytest.fixture
def allowed(tmp_path: Path) -> Iterator[tuple[TestClient, GatewayConfig]]:
    config = make_config(tmp_path, f"sqlite:///{tmp_path}/gw.db", functions={"enabled": True, "teams": ["team-a"]})
    with TestClient(create_app(config, run_worker=False)) as client:
        yield client, config


def test_functions_are_refused_unless_the_site_turns_them_on(client: TestClient) -> None:
    response = client.post("/v1/functions", json=function_body(), headers=auth("alice"))
    assert response.status_code == 403, response.text
    assert "functions.enabled" in response.json()["detail"]


def test_an_allowed_team_gets_a_job_whose_payload_is_kept_as_bytes(
    allowed: tuple[TestClient, GatewayConfig], tmp_path: Path
) -> None:
    client, config = allowed
    response = client.post("/v1/functions", json=function_body(framework="ddp"), headers=auth("alice"))
    assert response.status_code == 201, response.text
    job = response.json()
    assert (job["state"], job["algorithm"], job["framework"], job["user"]) == (
        "accepted",
        "python-function",
        "ddp",
        "alice",
    )
    payload = tmp_path / "jobs" / "team-a" / job["id"] / "function.pkl"
    assert payload.read_bytes() == NOT_A_PICKLE
    with Session(client.app.state.engine) as session:  # type: ignore[attr-defined]
        row = session.get(Job, job["id"])
        assert row is not None
        spec = job_spec(config, row)
    assert spec.function == payload and spec.framework == "ddp" and spec.run_as == "alice"
    assert spec.command == ("python-function", str(payload))
    assert "TRAINING_DATA_PATH" not in spec.env and spec.env["JOB_ID"] == job["id"]
    # nothing to read back yet, and no rerun of a function from its record
    assert client.get(f"/v1/jobs/{job['id']}/outcome", headers=auth("alice")).status_code == 404
    assert client.get(f"/v1/jobs/{job['id']}/outcome?rank=4", headers=auth("alice")).status_code == 422
    assert client.get(f"/v1/jobs/{job['id']}/outcome", headers=auth("bob")).status_code == 404
    rerun = client.post(f"/v1/jobs/{job['id']}/rerun", headers=auth("alice"))
    assert rerun.status_code == 422 and "submit the function again" in rerun.json()["detail"]


def test_a_team_left_out_of_functions_teams_is_refused(allowed: tuple[TestClient, GatewayConfig]) -> None:
    client, _ = allowed
    response = client.post("/v1/functions", json=function_body(), headers=auth("bob"))
    assert response.status_code == 403 and "functions.teams" in response.json()["detail"]


@pytest.mark.parametrize(
    "overrides, field",
    [({"payload": "%%% not base64"}, "payload"), ({"nodes": 3}, "nodes"), ({"framework": "mpi"}, "framework")],
)
def test_bad_function_requests_name_the_field(
    allowed: tuple[TestClient, GatewayConfig], overrides: dict[str, Any], field: str
) -> None:
    client, _ = allowed
    response = client.post("/v1/functions", json=function_body(**overrides), headers=auth("alice"))
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field


def test_a_trainer_job_has_no_outcome(client: TestClient, algorithm: dict[str, Any]) -> None:
    from tests.gateway.conftest import job_body

    job = client.post("/v1/jobs", json=job_body(), headers=auth("alice")).json()
    response = client.get(f"/v1/jobs/{job['id']}/outcome", headers=auth("alice"))
    assert response.status_code == 409 and "not a function" in response.json()["detail"]


def test_functions_config_names_known_teams(tmp_path: Path) -> None:
    with pytest.raises((ConfigError, ValueError), match=r"functions\.teams"):
        make_config(tmp_path, "sqlite://", functions={"enabled": True, "teams": ["team-z"]})
    with pytest.raises((ConfigError, ValueError), match=r"functions\.image"):
        make_config(tmp_path, "sqlite://", container_runtime="apptainer", functions={"enabled": True})
