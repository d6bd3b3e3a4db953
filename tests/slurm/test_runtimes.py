"""On Slurm: the same 2-node x 2-task intent classifier run through the gateway with container runtime apptainer
and with runtime none gives the same model: the image's trainer and Python are the project's own, so the runtime
a site picks changes where the job runs, never what it learns."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import torch

import pytest
from fastapi.testclient import TestClient

from devcluster.spec import ClusterSpec
from gateway.app import create_app
from tests.gateway.conftest import auth
from tests.slurm.support import CLASSIFIER, IMAGE, classifier_job, gateway_config, sacct_row, wait_for

pytestmark = pytest.mark.slurm


def run_classifier(root: Path, runtime: str, dataset_hash: str) -> tuple[dict[str, Any], Path]:
    """The classifier run by a gateway of ``runtime`` whose files lie under ``root``; the job and its model."""
    app = create_app(gateway_config(root, runtime=runtime))
    with TestClient(app) as client:
        created = client.post("/v1/algorithms", json={**CLASSIFIER, "shared": True}, headers=auth("admin"))
        assert created.status_code == 201, created.text
        job = client.post("/v1/jobs", json=classifier_job(dataset_hash), headers=auth("alice")).json()
        done = wait_for(client, job["id"], {"succeeded", "failed", "cancelled", "timeout"}, timeout_s=600)
        assert done["state"] == "succeeded", (runtime, done)
    models = list((root / "jobs").rglob("model.pt"))
    assert len(models) == 1, models
    return done, models[0]


def test_apptainer_and_none_train_the_same_model(cluster: ClusterSpec, dataset_hash: str, tmp_path: Path) -> None:
    if not Path(IMAGE).is_file():
        pytest.skip(f"no image at {IMAGE} (scripts/build-image.sh)")
    runs = {}
    for runtime in ("apptainer", "none"):
        root = tmp_path / runtime
        shutil.copytree(tmp_path / "datasets", root / "datasets")
        runs[runtime] = run_classifier(root, runtime, dataset_hash)
    for runtime, (done, _) in runs.items():
        assert sacct_row(done["slurm_job_id"], "State,NNodes") == ["COMPLETED", "2"], runtime
    # the trainer ran inside the image (Apptainer set APPTAINER_CONTAINER for it), and without one under none
    assert str(runs["apptainer"][0]["provenance"]["container"]).endswith("intent-classifier.sif")
    registered = "sha256:" + hashlib.sha256(Path(IMAGE).read_bytes()).hexdigest()
    assert runs["apptainer"][0]["image_digest"] == registered
    assert runs["apptainer"][0]["provenance"]["image_digest"] == registered  # what the trainer ran in, by bytes
    assert runs["none"][0]["provenance"].get("container") is None
    boxed, bare = (torch.load(runs[r][1], map_location="cpu", weights_only=True) for r in ("apptainer", "none"))
    assert boxed.keys() == bare.keys()
    assert all(torch.equal(boxed[k], bare[k]) for k in boxed), "the same SEED trained other weights"
    assert runs["apptainer"][1].read_bytes() == runs["none"][1].read_bytes()
