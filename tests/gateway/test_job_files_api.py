"""What the API and the dashboard serve of a job's own files (its function outcomes and rank logs) when the job's
user planted something there: a link on the file or on a folder above it, a FIFO, a file larger than the bound.
Without Slurm: the job row's submit folder is one this test controls."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from gateway.app import create_app
from gateway.config import GatewayConfig
from gateway.store.models import Job
from tests.gateway.conftest import TOKENS, auth, make_config
from tests.gateway.support import function_body

SECRET = b"SQLite format 3\0 admin-dev-token and every other team's rows"
JobFixture = tuple[TestClient, GatewayConfig, Path, str]


@pytest.fixture
def job(tmp_path: Path) -> Iterator[JobFixture]:
    """A function job of alice's that Slurm ran as 123: (client, config, its submit folder, its id)."""
    config = make_config(tmp_path, f"sqlite:///{tmp_path}/gw.db", functions={"enabled": True, "teams": ["team-a"]})
    with TestClient(create_app(config, run_worker=False)) as client:
        response = client.post("/v1/functions", json=function_body(), headers=auth("alice"))
        assert response.status_code == 201, response.text
        job_id = response.json()["id"]
        submit = config.job_root / "team-a" / job_id / "job"
        submit.mkdir(parents=True, exist_ok=True)
        with Session(client.app.state.engine) as session:  # type: ignore[attr-defined]
            row = session.get(Job, job_id)
            assert row is not None
            row.slurm_job_id, row.submit_folder = "123", str(submit)
            session.add(row)
            session.commit()
        (tmp_path / "secret.db").write_bytes(SECRET)
        yield client, config, submit, job_id


def outcome(client: TestClient, job_id: str, rank: int = 0) -> tuple[int, bytes]:
    response = client.get(f"/v1/jobs/{job_id}/outcome?rank={rank}", headers=auth("alice"))
    return response.status_code, response.content


def logs(client: TestClient, job_id: str) -> str:
    response = client.get(f"/v1/jobs/{job_id}/logs?rank=0", headers=auth("alice"))
    assert response.status_code == 200, response.text
    text: str = response.text
    return text


def within(seconds: float, call: object) -> object:
    box: dict[str, object] = {}
    thread = threading.Thread(target=lambda: box.update(value=call()), daemon=True)  # type: ignore[operator]
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "the request blocked"
    return box["value"]


def test_a_regular_outcome_and_log_are_served(job: JobFixture) -> None:
    client, _, submit, job_id = job
    assert outcome(client, job_id)[0] == 404
    (submit / "123_0_outcome.pkl").write_bytes(b"\x80\x05 the rank's own pickle")
    (submit / "123_0_log.out").write_text("epoch 1\nepoch 2\n")
    assert outcome(client, job_id) == (200, b"\x80\x05 the rank's own pickle")
    assert '"epoch 2"' in logs(client, job_id)


def test_links_to_the_gateways_files_serve_nothing(job: JobFixture, tmp_path: Path) -> None:
    client, _, submit, job_id = job
    (submit / "123_0_outcome.pkl").symlink_to(tmp_path / "secret.db")
    (submit / "123_0_log.out").symlink_to(tmp_path / "secret.db")
    status, body = outcome(client, job_id)
    assert status == 409 and b"SQLite" not in body and b"admin-dev-token" not in body
    text = logs(client, job_id)
    assert "SQLite" not in text and "admin-dev-token" not in text
    (submit / "123_0_log.out").unlink()
    (submit / "123_0_log.out").symlink_to("/proc/self/environ")
    assert "PATH=" not in logs(client, job_id)


def test_a_linked_submit_folder_serves_nothing(job: JobFixture, tmp_path: Path) -> None:
    client, _, submit, job_id = job
    other = tmp_path / "bobs-job"
    other.mkdir()
    (other / "123_0_outcome.pkl").write_bytes(SECRET)
    (other / "123_0_log.out").write_bytes(SECRET)
    submit.rmdir()
    submit.symlink_to(other)
    status, body = outcome(client, job_id)
    assert status in (404, 409) and b"SQLite" not in body
    assert "SQLite" not in logs(client, job_id)


def test_fifos_answer_at_once(job: JobFixture) -> None:
    client, _, submit, job_id = job
    os.mkfifo(submit / "123_0_outcome.pkl")
    os.mkfifo(submit / "123_0_log.out")
    assert within(5, lambda: outcome(client, job_id)[0]) == 409
    assert '"lines":[]' in str(within(5, lambda: logs(client, job_id)))


def test_an_outcome_past_the_bound_is_refused_without_reading_it(job: JobFixture) -> None:
    client, _, submit, job_id = job
    with open(submit / "123_0_outcome.pkl", "wb") as fh:
        fh.truncate(64 << 30)  # sparse: the bound is on the bytes read, whatever the size says
    started = time.monotonic()
    assert outcome(client, job_id)[0] == 409
    assert time.monotonic() - started < 5


def test_the_dashboards_job_page_serves_no_linked_byte(job: JobFixture, tmp_path: Path) -> None:
    client, _, submit, job_id = job
    (submit / "123_0_log.out").symlink_to(tmp_path / "secret.db")
    (submit / "123_1_log.out").write_text("rank one's own line\n")
    response = client.post("/ui/login", data={"token": TOKENS["alice"], "next": "/ui"}, follow_redirects=False)
    assert response.status_code == 303, response.text
    page = client.get(f"/ui/jobs/{job_id}")
    assert page.status_code == 200
    assert "rank one&#39;s own line" in page.text or "rank one's own line" in page.text
    assert "SQLite" not in page.text and "admin-dev-token" not in page.text
