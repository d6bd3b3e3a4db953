"""On Slurm, with runtime apptainer: an algorithm version runs the image bytes it was registered with. A copy of
the project's image is registered, runs, and is then replaced: the next submission is refused naming both
digests, a job accepted before the change (waiting for its team's quota) fails at dispatch without reaching
Slurm, and `hpcgw reregister` lets the new file run, its digest in the job's provenance."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from devcluster.spec import ClusterSpec
from gateway.app import create_app
from tests.gateway.conftest import auth
from tests.slurm.support import IMAGE, SLEEPER, gateway_config, sacct_row, wait_for

pytestmark = pytest.mark.slurm


def sha(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def quick_body(dataset_hash: str, name: str) -> dict[str, object]:
    return {"name": name, "algorithm": "pinned", "dataset_id": "intents", "train_data_version_hash": dataset_hash,
            "time_limit_min": 5}  # fmt: skip


def test_a_replaced_image_is_refused_then_runs_once_re_registered(
    cluster: ClusterSpec, dataset_hash: str, tmp_path: Path
) -> None:
    if not Path(IMAGE).is_file():
        pytest.fail(f"no image at {IMAGE}: make image")
    images = tmp_path / "images"
    images.mkdir()
    images.chmod(0o755)
    image = images / "pinned.sif"
    shutil.copyfile(IMAGE, image)
    image.chmod(0o644)
    config = gateway_config(tmp_path, runtime="apptainer", **{"team-a": {"max_running_jobs": 1}})
    config.image_roots = [images]
    with TestClient(create_app(config)) as client:
        command = ["python", "-c", "import os; print('ran in', os.environ['APPTAINER_CONTAINER'])"]
        pinned = {"name": "pinned", "version": "1", "image": str(image), "shared": True, "command": command}
        assert client.post("/v1/algorithms", json=pinned, headers=auth("admin")).status_code == 201
        sleeper = {**SLEEPER, "image": str(image), "shared": True}
        assert client.post("/v1/algorithms", json=sleeper, headers=auth("admin")).status_code == 201
        old = sha(image)

        first = client.post("/v1/jobs", json=quick_body(dataset_hash, "first"), headers=auth("alice")).json()
        done = wait_for(client, first["id"], {"succeeded", "failed", "cancelled", "timeout"})
        assert done["state"] == "succeeded", done
        assert sacct_row(done["slurm_job_id"], "State") == ["COMPLETED"]
        assert done["provenance"]["image_digest"] == old and done["provenance"]["container"] == str(image)

        # team-a runs one job at a time: the sleeper holds the place, the next job waits in the gateway
        holder = client.post("/v1/jobs", json={**quick_body(dataset_hash, "holder"), "algorithm": "sleeper"},
                             headers=auth("alice")).json()  # fmt: skip
        wait_for(client, holder["id"], {"launching", "running"})  # `sleep` never joins a rendezvous: launching
        waiting = client.post("/v1/jobs", json=quick_body(dataset_hash, "waiting"), headers=auth("alice")).json()
        assert waiting["state"] == "accepted" and waiting["image_digest"] == old

        # a rebuild, as scripts/build-image.sh does it: other bytes renamed over the path (writing into a SIF that
        # a running container has mounted would crash it with a bus error)
        rebuilt = images / "pinned.sif.new"
        shutil.copyfile(image, rebuilt)
        with rebuilt.open("ab") as f:
            f.write(b"\0" * 4096)
        rebuilt.chmod(0o644)
        rebuilt.replace(image)
        new = sha(image)
        refused = client.post("/v1/jobs", json=quick_body(dataset_hash, "refused"), headers=auth("alice"))
        assert refused.status_code == 422 and old in refused.text and new in refused.text, refused.text

        assert client.post(f"/v1/jobs/{holder['id']}/cancel", headers=auth("alice")).status_code == 200
        failed = wait_for(client, waiting["id"], {"failed", "succeeded", "queued", "running"})
        assert failed["state"] == "failed" and failed["slurm_job_id"] is None, failed
        assert old in failed["reason"] and new in failed["reason"], failed["reason"]

        # re-registered by the admin (a published algorithm's versions are the admins'): the new file runs
        assert client.post("/v1/algorithms/pinned/versions/1/digest", headers=auth("admin")).status_code == 200
        after = client.post("/v1/jobs", json=quick_body(dataset_hash, "after"), headers=auth("alice")).json()
        done = wait_for(client, after["id"], {"succeeded", "failed", "cancelled", "timeout"})
        assert done["state"] == "succeeded", done
        assert sacct_row(done["slurm_job_id"], "State") == ["COMPLETED"]
        assert done["provenance"]["image_digest"] == new
