"""Issue 29, hole 8 and the smaller ones: a sweep's tasks count against the backlog and the rate limits, an image
path is no file oracle, a parameter cannot set what the loader or a shell reads, no token runs jobs as root or as
a system account."""

from __future__ import annotations

import hashlib
import pwd
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlmodel import Session, func, select

from gateway.app import create_app
from gateway.config import ConfigError, GatewayConfig
from gateway.store.models import Job
from tests.gateway.conftest import TOKENS, auth, job_body, make_config
from tests.gateway.support import rate_limited


def sweep(points: int, **space: object) -> dict[str, object]:
    grid = space or {"grid": {"LR": list(range(points))}}
    return {"base": job_body(), "space": {"kind": "grid", **grid}, "max_parallel": 1}


def jobs_stored(client: TestClient) -> int:
    with Session(client.app.state.engine) as session:  # type: ignore[attr-defined]
        return int(session.exec(select(func.count()).select_from(Job)).one())


def test_a_sweeps_tasks_count_against_the_teams_backlog(client: TestClient, algorithm: dict[str, Any]) -> None:
    """team-a queues 5 at most: one small request no longer makes 100,000 jobs."""
    huge = client.post(
        "/v1/sweeps", json=sweep(0, grid={f"P{i}": list(range(10)) for i in range(5)}), headers=auth("alice")
    )
    assert huge.status_code == 422 and "more than 10000" in huge.json()["detail"]
    too_many = client.post("/v1/sweeps", json=sweep(6), headers=auth("alice"))
    assert too_many.status_code == 422 and "max_queued_jobs of 5" in too_many.json()["detail"]
    assert client.post("/v1/sweeps", json=sweep(4), headers=auth("alice")).status_code == 201
    full = client.post("/v1/sweeps", json=sweep(2), headers=auth("alice"))
    assert full.status_code == 429 and "Retry-After" in full.headers
    assert jobs_stored(client) == 4
    assert client.post("/v1/sweeps", json=sweep(1), headers=auth("alice")).status_code == 201


@pytest.fixture
def limited(tmp_path: Path, database_url: str) -> Iterator[TestClient]:
    with rate_limited(tmp_path, database_url, {"per_token": {"per_min": 1, "burst": 3}}) as client:
        yield client


def test_a_sweep_of_n_tasks_costs_n_submissions(limited: TestClient) -> None:
    beyond = limited.post("/v1/sweeps", json=sweep(4), headers=auth("alice"))
    assert beyond.status_code == 422 and "burst of 3" in beyond.json()["detail"]
    assert limited.post("/v1/sweeps", json=sweep(3), headers=auth("alice")).status_code == 201
    assert limited.post("/v1/jobs", json=job_body(), headers=auth("alice")).status_code == 429
    assert jobs_stored(limited) == 3


def image_client(tmp_path: Path, database_url: str, runtime: str) -> TestClient:
    config = make_config(tmp_path, database_url, container_runtime=runtime, image_roots=[str(tmp_path / "images")])
    return TestClient(create_app(config, run_worker=False))


def test_an_image_path_is_no_file_oracle(tmp_path: Path, database_url: str) -> None:
    images = tmp_path / "images"
    images.mkdir()
    (images / "good.sif").write_bytes(b"an image")
    (images / "link.sif").symlink_to(tmp_path / "gateway.db" if database_url.startswith("sqlite") else "/etc/passwd")
    (images / "sub").symlink_to("/etc")
    with image_client(tmp_path, database_url, "apptainer") as client:

        def register(name: str, image: str) -> tuple[int, str | None]:
            body = {"name": name, "version": "1", "image": image, "command": ["true"]}
            response = client.post("/v1/algorithms", json=body, headers=auth("alice"))
            reply = response.json()
            digest = reply["versions"][0]["image_digest"] if response.status_code == 201 else reply["detail"]
            return response.status_code, digest

        assert register("good", str(images / "good.sif")) == (201, "sha256:" + hashlib.sha256(b"an image").hexdigest())
        assert register("ref", "docker://alpine@sha256:" + "a" * 64) == (201, "sha256:" + "a" * 64)
        secret, absent = register("s", "/etc/passwd"), register("n", "/etc/no-such-file")
        assert secret[0] == absent[0] == 422
        assert secret[1] == absent[1].replace("/etc/no-such-file", "/etc/passwd")  # type: ignore[union-attr]
        for path in (images / "link.sif", images / "sub" / "passwd", images / ".." / "gateway.db", images / "sub"):
            status, detail = register("x", str(path))
            assert status == 422 and not re.search("[0-9a-f]{64}", detail or ""), path
    with image_client(tmp_path / "none", database_url, "none") as client:
        body = {"name": "label", "version": "1", "image": "/etc/passwd", "command": ["true"]}
        answer = client.post("/v1/algorithms", json=body, headers=auth("alice"))
        assert answer.status_code == 201 and answer.json()["versions"][0]["image_digest"] is None


@pytest.mark.parametrize(
    "name",
    ["LD_PRELOAD", "LD_AUDIT", "BASH_ENV", "ENV", "PYTHONSTARTUP", "PYTHONHOME", "PYTHONPATH", "PERL5OPT",
     "PERL5LIB", "RUBYOPT", "NODE_OPTIONS", "GCONV_PATH", "MALLOC_CHECK_", "IFS", "PS4", "SHELLOPTS", "BASHOPTS",
     "APPTAINERENV_X", "SINGULARITY_BIND", "SLURM_JOB_ID", "BASH_FUNC_X", "JAVA_TOOL_OPTIONS"],
)  # fmt: skip
def test_a_parameter_may_not_set_what_the_loader_or_a_shell_reads(
    client: TestClient, algorithm: dict[str, Any], name: str
) -> None:
    response = client.post("/v1/jobs", json=job_body(parameters={name: "/tmp/evil.so"}), headers=auth("alice"))
    assert response.status_code == 422 and name in response.text and "reserved" in response.text
    space = {"kind": "list", "points": [{name: "x"}]}
    swept = client.post(
        "/v1/sweeps", json={"base": job_body(), "space": space, "max_parallel": 1}, headers=auth("alice")
    )
    assert swept.status_code == 422 and name in swept.text
    assert jobs_stored(client) == 0


def tokens(unix_user: str) -> list[dict[str, object]]:
    return [
        {"user": "alice", "team": "team-a", "token": TOKENS["alice"], "unix_user": unix_user},
        {"user": "admin", "role": "admin", "token": TOKENS["admin"]},
    ]


def a_system_account() -> str:
    return next(p.pw_name for p in pwd.getpwall() if 0 < p.pw_uid < 1000)


@pytest.mark.parametrize("unix_user", ["root", "system"])
def test_no_token_runs_jobs_as_root_or_a_system_account(tmp_path: Path, unix_user: str) -> None:
    account = a_system_account() if unix_user == "system" else unix_user
    with pytest.raises(ValidationError, match=r"root|system account"):
        make_config(tmp_path, "sqlite://", tokens=tokens(account))
    if unix_user == "system":
        allowed = make_config(tmp_path, "sqlite://", tokens=tokens(account), allowed_system_users=[account])
        assert allowed.unix_user_of("alice") == account


def test_no_token_runs_jobs_as_the_gateways_own_account(tmp_path: Path) -> None:
    account = a_system_account()
    config: GatewayConfig = make_config(tmp_path, "sqlite://", tokens=tokens(account), allowed_system_users=[account])
    with pytest.raises(ConfigError, match="the account the gateway itself runs as"):
        config.check_run_as(pwd.getpwnam(account).pw_uid)
    config.check_run_as(pwd.getpwnam("root").pw_uid)  # another account: fine
