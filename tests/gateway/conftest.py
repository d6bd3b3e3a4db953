"""Service tests: a TestClient over a fresh database each, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import grp
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from bench.support import DEV_USERS, gateway_settings
from gateway.app import create_app
from gateway.config import GatewayConfig

REPO = Path(__file__).resolve().parent.parent.parent
TOKENS = {user: DEV_USERS[user]["token"] for user in ("alice", "bob", "admin")}
DATASET = ("intents", "v1hash")


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The project's private PostgreSQL (installed and started by scripts/postgres-dev.sh)."""
    out = subprocess.run(
        ["bash", str(REPO / "scripts" / "postgres-dev.sh"), "up", str(REPO / ".hpcgw" / "postgres")],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/gateway.db"
        return
    base = request.getfixturevalue("postgres_url")
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield base.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def unix_group(team: str) -> str:
    """The team's own group where the development cluster has created it (tests on Slurm: jobs run as the
    team's users), else this process's group (tests without Slurm, on a machine without those groups)."""
    try:
        return grp.getgrnam(team).gr_name
    except KeyError:
        return grp.getgrgid(os.getgid()).gr_name


def make_config(tmp_path: Path, database_url: str, **overrides: Any) -> GatewayConfig:
    """The gateway's test configuration (:func:`bench.support.gateway_settings`, ``overrides`` passed on), each
    team's group the one :func:`unix_group` finds, and the dataset :data:`DATASET` in place."""
    data = gateway_settings(tmp_path, database_url=database_url, **overrides)
    for name, team in data["teams"].items():
        team.setdefault("unix_group", unix_group(name))
    (tmp_path / "datasets" / DATASET[0] / DATASET[1]).mkdir(parents=True, exist_ok=True)
    return GatewayConfig.model_validate(data).resolved(tmp_path)


def auth(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[user]}"}


@pytest.fixture
def client(tmp_path: Path, database_url: str) -> Iterator[TestClient]:
    app = create_app(make_config(tmp_path, database_url), run_worker=False)
    with TestClient(app) as c:
        yield c


@pytest.fixture
def algorithm(client: TestClient) -> dict[str, Any]:
    body = {
        "name": "intent-classifier",
        "version": "1.0",
        "image": "/images/intent-classifier.sif",
        "command": ["python", "/opt/intent-classifier/train.py"],
        "local_command": ["python", "train.py"],
        "shared": True,
    }
    # A local_command is an admin's to register, and an algorithm every team runs is one an admin published
    # (issue 29): a team's own algorithm is resolved by its own jobs only.
    response = client.post("/v1/algorithms", json=body, headers=auth("admin"))
    assert response.status_code == 201, response.text
    return cast(dict[str, Any], response.json())


def job_body(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "name": "t1",
        "algorithm": "intent-classifier",
        "dataset_id": DATASET[0],
        "train_data_version_hash": DATASET[1],
        "parameters": {"LR": 0.1, "EPOCHS": 2},
    }
    body.update(overrides)
    return body
