"""On Slurm: torch.distributed (DDP) beside Horovod, through the same launcher, protocol and gateway: the
allreduce, the example trainer in its DDP form, and the job script. Fail-fast and requeue from the checkpoint are
tests/slurm/test_launchers.py's, run for both frameworks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import pytest
from fastapi.testclient import TestClient

from devcluster.spec import ClusterSpec
from examples.intent_classifier import TRAINER_DIR, intent_classifier_spec
from launchers import JobSpec, JobState, submit
from launchers.runtime.markers import JobMarkers
from launchers.slurm.commands import wait_until_done
from launchers.spec import Framework
from tests.gateway.conftest import auth
from tests.slurm.support import (  # noqa: F401  (dataset: the fixture)
    DATA,
    IMAGE,
    classifier_job,
    dataset,
    in_runtime,
    metrics,
    wait_for,
)

pytestmark = pytest.mark.slurm


def reports(job: object, ranks: int) -> list[dict[str, Any]]:
    found = []
    for rank in range(ranks):
        for line in job.stdout(rank).read_text().splitlines():  # type: ignore[attr-defined]
            if line.startswith("HPCGW_RANK_REPORT "):
                found.append(json.loads(line.split(" ", 1)[1]))
    return found


def test_a_ddp_allreduce_sums_over_two_nodes(cluster: ClusterSpec, tmp_path: Path) -> None:
    spec = JobSpec(
        partition="team-a",
        nodes=2,
        tasks_per_node=2,
        time_limit_min=5,
        framework="ddp",
        command=(sys.executable, str(DATA / "ddp_allreduce.py")),
        folder=tmp_path,
    )
    job = submit(spec)
    assert job.wait(timeout_s=300) is JobState.SUCCEEDED, job.stderr(0).read_text()[-3000:]
    found = sorted(reports(job, 4), key=lambda r: r["rank"])
    assert [(r["rank"], r["size"], r["sum"], r["local_rank"]) for r in found] == [
        (0, 4, 10.0, 0),
        (1, 4, 10.0, 1),
        (2, 4, 10.0, 0),
        (3, 4, 10.0, 1),
    ]
    started = job.markers.started()
    assert started is not None and started["size"] == 4  # written once every rank finished init_process_group
    row = job.info()
    assert row is not None and row.nodes == 2


def test_the_ddp_trainer_matches_the_horovod_band_and_repeats_itself(
    cluster: ClusterSpec, dataset: Path, tmp_path: Path
) -> None:
    runs = {}
    runs_of: tuple[tuple[str, Framework], ...] = (("ddp-a", "ddp"), ("ddp-b", "ddp"), ("horovod", "horovod"))
    for name, framework in runs_of:
        spec = intent_classifier_spec(
            tmp_path / name, dataset_dir=dataset, partition="team-b", epochs=3, seed=11, framework=framework
        )
        job = submit(in_runtime(spec, tmp_path / name, dataset))
        assert job.wait(timeout_s=600) is JobState.SUCCEEDED, job.stderr(0).read_text()[-3000:]
        runs[name] = metrics(tmp_path / name / "metrics.jsonl")
        assert job.markers.started() is not None
    strip = [[{k: v for k, v in m.items() if k != "samples_per_s"} for m in runs[n]] for n in ("ddp-a", "ddp-b")]
    assert strip[0] == strip[1]  # the same SEED, the same metrics
    ddp, hvd = runs["ddp-a"][-1]["accuracy"], runs["horovod"][-1]["accuracy"]
    assert ddp > 0.8 and abs(ddp - hvd) < 0.05, (ddp, hvd)
    assert [m["epoch"] for m in runs["ddp-a"]] == [1, 2, 3]
    assert (tmp_path / "ddp-a" / "model" / "model.pt").stat().st_size > 0


def test_the_gateway_runs_a_ddp_algorithm_version(gateway: TestClient, dataset_hash: str) -> None:
    version = {
        "name": "intent-classifier-ddp",
        "version": "1.0",
        "image": IMAGE,
        "command": ["python", "/opt/intent-classifier/train_ddp.py"],
        "local_command": [sys.executable, str(TRAINER_DIR / "train_ddp.py")],
        "framework": "ddp",
        "team": "team-a",
    }
    created = gateway.post("/v1/algorithms", json=version, headers=auth("admin"))
    assert created.status_code == 201 and created.json()["versions"][0]["framework"] == "ddp", created.text
    body = classifier_job(dataset_hash, algorithm="intent-classifier-ddp")
    body["parameters"] = {**cast(dict[str, Any], body["parameters"]), "EPOCHS": 2}
    ddp_script = gateway.post("/v1/jobs/render", json=body, headers=auth("alice")).json()["script"]
    horovod_script = gateway.post(
        "/v1/jobs/render", json={**body, "algorithm": "intent-classifier"}, headers=auth("alice")
    ).json()["script"]
    assert "export HPCGW_FRAMEWORK=ddp" in ddp_script and "HPCGW_FRAMEWORK" not in horovod_script
    job = gateway.post("/v1/jobs", json=body, headers=auth("alice")).json()
    assert job["framework"] == "ddp"
    done = wait_for(gateway, job["id"], {"succeeded", "failed", "cancelled", "timeout"}, timeout_s=600)
    assert done["state"] == "succeeded", done
    epochs = gateway.get(f"/v1/jobs/{job['id']}/metrics", headers=auth("alice")).json()["epochs"]
    assert [m["epoch"] for m in epochs] == [1, 2] and epochs[-1]["accuracy"] > 0.5
    assert done["provenance"]["world_size"] == 4


def test_the_raw_srun_bootstrap_runs_ddp_too(cluster: ClusterSpec, tmp_path: Path) -> None:
    output = tmp_path / "out.txt"
    srun = (
        f"srun --kill-on-bad-exit=1 --distribution=block {sys.executable} -m launchers.runtime.bootstrap "
        f"--framework ddp --folder {tmp_path} -- {sys.executable} {DATA / 'ddp_allreduce.py'}"
    )
    submitted = subprocess.run(
        ["sbatch", "--parsable", "-N2", "--ntasks-per-node=2", "-p", "team-a", "-o", str(output), "--wrap", srun],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
        timeout=60,
    )
    job_id = submitted.stdout.strip().split(";")[0]
    final = wait_until_done(job_id, timeout_s=180)
    lines = [line.split(" ", 1)[1] for line in output.read_text().splitlines() if line.startswith("HPCGW_RANK_REPORT")]
    assert final.slurm_state == "COMPLETED", output.read_text()
    assert sorted(json.loads(line)["sum"] for line in lines) == [10.0] * 4
    started = JobMarkers(tmp_path, job_id).started()
    assert started is not None and started["size"] == 4
