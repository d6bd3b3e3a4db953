"""Fixtures of the tests on Slurm: a dataset, and a gateway with its real worker in front of the local cluster.

Every test here ends with its Slurm jobs cancelled (tests/conftest.py), pass or fail.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from devcluster.spec import ClusterSpec
from examples.intent_classifier import ensure_dataset
from gateway.app import create_app
from tests.gateway.conftest import auth, postgres_url  # noqa: F401  (the fixture)
from tests.slurm.support import CLASSIFIER, ENV_PRINTER, QUICK, SLEEPER, gateway_config


@pytest.fixture(autouse=True)
def _reachable_by_job_users(tmp_path: Path) -> None:
    """Jobs run as their users (alice, bob), who must reach the test's folders; pytest makes them 0700."""
    for folder in (tmp_path, *tmp_path.parents):
        if str(folder) in ("/", "/tmp"):
            break
        folder.chmod(folder.stat().st_mode | 0o011)


@pytest.fixture
def dataset_hash(tmp_path: Path) -> str:
    staging = tmp_path / "staging"
    digest = ensure_dataset(staging)
    target = tmp_path / "datasets" / "intents" / digest
    target.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(target)
    return digest


@pytest.fixture
def gateway(cluster: ClusterSpec, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[TestClient]:
    limits = getattr(request, "param", {})
    app = create_app(gateway_config(tmp_path, **limits))
    with TestClient(app) as client:
        for algorithm in (CLASSIFIER, SLEEPER, ENV_PRINTER, QUICK):
            # published by the admin: every team's tests run them (a team's own would be resolved by it alone)
            response = client.post("/v1/algorithms", json={**algorithm, "shared": True}, headers=auth("admin"))
            assert response.status_code == 201, response.text
        yield client


@pytest.fixture
def postgres_database(postgres_url: str) -> Iterator[str]:
    name = f"slurm_{random.randrange(1 << 32):08x}"
    for statement in (f'CREATE DATABASE "{name}"', None, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'):
        if statement is None:
            yield postgres_url.rsplit("/", 1)[0] + f"/{name}"
            continue
        admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")  # a new one: the server restarted
        with admin.connect() as connection:
            connection.execute(text(statement))
        admin.dispose()
