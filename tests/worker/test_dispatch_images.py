"""The image a job was accepted for is the image it runs: a file replaced while the job waited for its team's
quota fails the job at dispatch, naming both digests, and nothing reaches sbatch."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from sqlmodel import Session, select

from gateway.store.models import AlgorithmVersion
from gateway.submit.images import clear_cache
from tests.worker.conftest import ALGORITHM, Gateway
from tests.worker.fakeslurm import FakeSlurm


def pinned_gateway(make_gateway: Callable[..., Gateway], tmp_path: Path) -> tuple[Gateway, Path, str]:
    """A gateway with runtime apptainer whose algorithm version is pinned to a real file's digest."""
    image = tmp_path / "images" / "intent-classifier.sif"
    image.parent.mkdir()
    image.write_bytes(b"the image as registered\n" * 1000)
    digest = "sha256:" + hashlib.sha256(image.read_bytes()).hexdigest()
    gw = make_gateway(container_runtime="apptainer", image_roots=[str(image.parent)])
    with Session(gw.engine) as session:
        version = session.exec(select(AlgorithmVersion).where(AlgorithmVersion.algorithm == ALGORITHM)).one()
        version.image, version.image_digest = str(image), digest
        session.add(version)
        session.commit()
    clear_cache()
    return gw, image, digest


def test_an_unchanged_image_is_dispatched(
    make_gateway: Callable[..., Gateway], fake: FakeSlurm, tmp_path: Path
) -> None:
    gw, _, digest = pinned_gateway(make_gateway, tmp_path)
    job = gw.submit()
    assert gw.job(job).image_digest == digest
    gw.cycle()
    assert gw.state(job) == "queued" and fake.count("sbatch") == 1


def test_an_image_replaced_while_the_job_waited_fails_it_at_dispatch(
    make_gateway: Callable[..., Gateway], fake: FakeSlurm, tmp_path: Path
) -> None:
    gw, image, digest = pinned_gateway(make_gateway, tmp_path)
    jobs = [gw.submit() for _ in range(2)]
    sweep = gw.sweep([0.1, 0.2, 0.3], max_parallel=2)
    replacement = image.with_name("new.sif")
    replacement.write_bytes(b"other bytes\n" * 1000)
    replacement.rename(image)  # what a rebuild that writes a new file and moves it into place does
    found = "sha256:" + hashlib.sha256(image.read_bytes()).hexdigest()
    gw.cycle()
    assert fake.count("sbatch") == 0
    for job_id in [*jobs, *(task.id for task in gw.tasks(sweep))]:
        job = gw.job(job_id)
        assert job.state == "failed", job_id
        assert digest in (job.reason or "") and found in (job.reason or ""), job.reason
        assert "sbatch" not in (job.reason or "")
        assert gw.history(job_id)[-1] == "failed"


def test_a_removed_image_fails_the_job_with_the_reason(
    make_gateway: Callable[..., Gateway], fake: FakeSlurm, tmp_path: Path
) -> None:
    gw, image, _ = pinned_gateway(make_gateway, tmp_path)
    job = gw.submit()
    image.unlink()
    gw.cycle()
    assert fake.count("sbatch") == 0
    assert gw.state(job) == "failed"
    assert "cannot be read" in (gw.job(job).reason or "")
