"""Issue 30: an algorithm version's image is pinned by its SHA-256. With runtime apptainer a submission (a job, a
batch, a sweep, a sweep's retry) whose image file no longer matches is refused, naming the image and both
digests; re-registering the version (POST …/versions/{version}/digest) is how a new file runs. An unchanged
file is not hashed again (gateway.submit.images caches per file key); with runtime none nothing is checked."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select
from typer.testing import CliRunner

from gateway.app import create_app
from gateway.cli import algorithms as cli_algorithms
from gateway.cli.main import app as cli_app
from gateway.client import Client
from gateway.store.models import Job
from gateway.submit import images
from gateway.submit.reruns import verify
from launchers.states import JobState
from tests.gateway.conftest import TOKENS, auth, job_body, make_config
from tests.gateway.support import hashed  # noqa: F401  (a fixture)

OLD, NEW = b"the registered image", b"another image, same path"
DIGEST = "/v1/algorithms/intent-classifier/versions/1.0/digest"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def write_image(path: Path, data: bytes) -> None:
    """A new file at ``path`` (a rename, as an image build finishes), older than gateway.submit.images.RACY_NS once
    this returns: a digest of a file that is still settling is never cached."""
    staged = path.with_suffix(".new")
    staged.write_bytes(data)
    staged.replace(path)
    time.sleep(images.RACY_NS / 1e9 + 0.02)


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "images" / "intent" / "classifier.sif"
    path.parent.mkdir(parents=True)
    write_image(path, OLD)
    return path


def client_for(tmp_path: Path, database_url: str, runtime: str) -> TestClient:
    config = make_config(tmp_path, database_url, container_runtime=runtime, image_roots=[str(tmp_path / "images")])
    return TestClient(create_app(config, run_worker=False))


@pytest.fixture
def pinned(tmp_path: Path, database_url: str, image: Path, hashed: list[int]) -> Iterator[TestClient]:
    """Runtime apptainer; team-a's algorithm, version 1.0, whose image is ``image`` as OLD."""
    with client_for(tmp_path, database_url, "apptainer") as client:
        body = {"name": "intent-classifier", "version": "1.0", "image": str(image), "command": ["python", "t.py"]}
        response = client.post("/v1/algorithms", json=body, headers=auth("alice"))
        assert response.status_code == 201, response.text
        assert response.json()["versions"][0]["image_digest"] == sha(OLD)
        yield client


def submit(client: TestClient) -> tuple[int, str]:
    response = client.post("/v1/jobs", json=job_body(), headers=auth("alice"))
    return response.status_code, response.text


def test_an_unchanged_image_is_accepted_and_hashed_once(pinned: TestClient, hashed: list[int]) -> None:
    assert len(hashed) == 1  # at registration
    for _ in range(3):
        status, text = submit(pinned)
        assert status == 201, text
    assert len(hashed) == 1  # each submission: one walk and one fstat, no read
    assert pinned.get("/v1/jobs", headers=auth("alice")).json()["items"][0]["image_digest"] == sha(OLD)


def test_a_replaced_image_is_refused_naming_both_digests(pinned: TestClient, image: Path, hashed: list[int]) -> None:
    assert submit(pinned)[0] == 201
    write_image(image, NEW)
    for _ in range(2):
        status, text = submit(pinned)
        assert status == 422, text
        assert str(image) in text and sha(OLD) in text and sha(NEW) in text
        assert "re-register" in text and DIGEST in text
    assert len(hashed) == 2  # the new file once, then from the cache: a refusal costs no read either
    batch = pinned.post("/v1/jobs/batch", json={"jobs": [job_body()]}, headers=auth("alice")).json()
    assert batch["items"][0]["status"] == 422 and sha(NEW) in batch["items"][0]["error"]["detail"]


def test_an_image_rewritten_in_place_is_refused(pinned: TestClient, image: Path) -> None:
    """Same inode, same size, the mtime put back: the ctime still tells (tests/unit/test_image_cache.py)."""
    stat = image.stat()
    image.write_bytes(OLD.upper())
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    status, text = submit(pinned)
    assert status == 422 and sha(OLD.upper()) in text, text


def test_a_removed_image_is_refused_with_the_reason(pinned: TestClient, image: Path) -> None:
    image.unlink()
    status, text = submit(pinned)
    assert status == 422 and str(image) in text and "cannot be read" in text and "No such file" in text
    image.symlink_to(image.parent / "elsewhere.sif")  # a link put in its place is not followed
    status, text = submit(pinned)
    assert status == 422 and "a link" in text, text


def test_re_registering_the_version_lets_the_new_file_run(pinned: TestClient, image: Path) -> None:
    assert pinned.post("/v1/jobs", json=job_body(name="before"), headers=auth("alice")).status_code == 201
    write_image(image, NEW)
    assert pinned.post(DIGEST, headers=auth("bob")).status_code == 404  # another team's algorithm
    answer = pinned.post(DIGEST, headers=auth("alice"))
    assert answer.status_code == 200 and answer.json()["versions"][0]["image_digest"] == sha(NEW)
    status, text = submit(pinned)
    assert status == 201 and sha(NEW) in text, text
    digests = {j["name"]: j["image_digest"] for j in pinned.get("/v1/jobs", headers=auth("alice")).json()["items"]}
    assert digests == {"before": sha(OLD), "t1": sha(NEW)}  # an accepted job keeps what it was accepted with
    again = pinned.post("/v1/algorithms/intent-classifier/versions", json={"version": "1.0", "image": str(image),
                        "command": ["x"]}, headers=auth("alice"))  # fmt: skip
    assert again.status_code == 409 and DIGEST in again.text
    image.unlink()
    assert pinned.post(DIGEST, headers=auth("alice")).status_code == 422  # nothing to pin: the digest stays
    assert pinned.get("/v1/algorithms", headers=auth("alice")).json()[0]["versions"][0]["image_digest"] == sha(NEW)


def test_a_sweep_and_its_retry_are_refused(pinned: TestClient, image: Path) -> None:
    sweep = {"base": job_body(), "space": {"kind": "grid", "grid": {"LR": [1, 2]}}, "max_parallel": 1}
    made = pinned.post("/v1/sweeps", json=sweep, headers=auth("alice"))
    assert made.status_code == 201, made.text
    with Session(pinned.app.state.engine) as session:  # type: ignore[attr-defined]
        for job in session.exec(select(Job)).all():
            job.state = JobState.FAILED
            session.add(job)
        session.commit()
    write_image(image, NEW)
    refused = pinned.post("/v1/sweeps", json=sweep, headers=auth("alice"))
    assert refused.status_code == 422 and sha(OLD) in refused.text and sha(NEW) in refused.text
    assert pinned.post(DIGEST, headers=auth("alice")).status_code == 200
    retry = pinned.post(f"/v1/sweeps/{made.json()['id']}/retry-failed", headers=auth("alice"))
    assert retry.status_code == 422 and "a retry runs the image its tasks ran" in retry.text, retry.text


def test_runtime_none_never_looks_at_the_image(
    tmp_path: Path, database_url: str, image: Path, hashed: list[int]
) -> None:
    with client_for(tmp_path, database_url, "none") as client:
        body: dict[str, Any] = {
            "name": "intent-classifier",
            "version": "1.0",
            "image": str(image),
            "command": ["python", "t.py"],
        }
        body |= {"local_command": ["true"], "shared": True}
        assert client.post("/v1/algorithms", json=body, headers=auth("admin")).status_code == 201
        image.unlink()
        assert len(hashed) == 1  # the registration's record; images are labels with runtime none
        assert submit(client)[0] == 201
        sweep = {"base": job_body(), "space": {"kind": "list", "points": [{"LR": 1}]}, "max_parallel": 1}
        assert client.post("/v1/sweeps", json=sweep, headers=auth("alice")).status_code == 201
        assert len(hashed) == 1


def test_a_verified_rerun_names_an_image_that_changed() -> None:
    """The rerun ran the re-registered digest: the verification says so, with both digests."""
    fields: dict[str, Any] = {
        "team": "team-a",
        "user": "alice",
        "name": "t",
        "partition": "p",
        "account": "a",
        "folder": "f",
    }
    fields |= {"algorithm": "intent-classifier", "algorithm_version": "1.0", "image": "/i.sif", "command": ["x"]}
    fields |= {
        "dataset_id": "d",
        "train_data_version_hash": "h",
        "state": JobState.SUCCEEDED,
        "parameters": {},
        "nodes": 1,
        "tasks_per_node": 1,
    }
    original = Job(**fields, image_digest=sha(OLD), provenance={"model_sha256": "a"})
    rerun = Job(**fields, image_digest=sha(NEW), provenance={"model_sha256": "b"})
    answer = verify(original, rerun)
    assert answer.status == "different" and sha(OLD) in answer.detail and sha(NEW) in answer.detail
    assert "re-registered" in answer.detail
    assert [d.input for d in answer.differences] == ["image_digest"]


def test_hpcgw_reregister_pins_the_rebuilt_file(
    pinned: TestClient, image: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command line's way to the same endpoint, as the algorithm's team: a refused submission runs after it."""
    write_image(image, NEW)
    assert submit(pinned)[0] == 422
    monkeypatch.setattr(  # the CLI closes its client: a fresh one per command
        cli_algorithms, "client", lambda *_: Client("http://testserver", TOKENS["alice"], transport=pinned._transport)
    )
    done = CliRunner().invoke(cli_app, ["reregister", "intent-classifier", "1.0"])
    assert done.exit_code == 0, done.output
    assert done.output.strip() == f"intent-classifier 1.0: {image} pinned to {sha(NEW)}"
    assert submit(pinned)[0] == 201
    missing = CliRunner().invoke(cli_app, ["reregister", "intent-classifier", "9.9"])
    assert missing.exit_code != 0 and "has no version '9.9'" in missing.output
