"""On Slurm: the health policy stops runs that hang, diverge or stop improving, and requeues a run away from
the node whose ranks went silent. Evidence: sacct's records, the job's attempts and the files the trainer wrote."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import Session

from devcluster.spec import ClusterSpec
from examples.intent_classifier import ensure_dataset
from gateway.client import Client
from gateway.store.models import Job
from launchers.slurm.times import parse_timestamp
from tests.gateway.conftest import auth
from tests.slurm.cli_support import Gateway, hpcgw
from tests.slurm.support import CLASSIFIER, DATA, classifier_job, python_algorithm, sacct_row, wait_for

pytestmark = pytest.mark.slurm
HEALTH = python_algorithm("health-trainer", DATA / "health_trainer.py")
STOPPED = {"succeeded", "failed", "cancelled", "timeout", "hung", "diverged", "stopped_early"}


def submit(
    client: TestClient, dataset_hash: str, parameters: dict[str, Any], health: dict[str, Any], **resources: object
) -> dict[str, Any]:
    registered = client.post("/v1/algorithms", json={**HEALTH, "team": "team-a"}, headers=auth("admin"))
    assert registered.status_code in (201, 409), registered.text
    body = {
        "name": "health",
        "algorithm": "health-trainer",
        "dataset_id": "intents",
        "train_data_version_hash": dataset_hash,
        "time_limit_min": 10,
        "parameters": parameters,
        "health": {"heartbeat_s": 1, **health},
        **resources,
    }
    response = client.post("/v1/jobs", json=body, headers=auth("alice"))
    assert response.status_code == 201, response.text
    job: dict[str, Any] = response.json()
    return job


def sacct_times(slurm_job_id: str) -> tuple[float, float]:
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-j", slurm_job_id, "-o", "Start,End"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[0]
    start, end = (parse_timestamp(x) for x in out.split("|"))
    assert start is not None and end is not None
    return start.timestamp(), end.timestamp()


def test_a_rank_that_hangs_is_stopped_as_hung(gateway: TestClient, dataset_hash: str) -> None:
    timeout_s, interval_s = 10, cast(FastAPI, gateway.app).state.config.poll.interval_s
    job = submit(
        gateway,
        dataset_hash,
        {"EPOCHS": 4, "HANG_RANK": 1, "HANG_AFTER": 1},
        {"hang_timeout_s": timeout_s, "on_hang": "stop"},
        nodes=2,
    )
    done = wait_for(gateway, job["id"], STOPPED, timeout_s=240)
    assert done["state"] == "hung", done
    assert "no rank reported progress" in done["health_reason"]
    assert sacct_row(done["slurm_job_id"])[0].startswith("CANCELLED")
    hang = json.loads((Path(_folder(gateway, job["id"])) / "hang.1").read_text())
    _, ended = sacct_times(done["slurm_job_id"])
    # within the timeout plus one poll interval of the last progress; 3 s for the heartbeat and scancel's way
    assert ended - hang["time"] <= timeout_s + interval_s + 3, (ended - hang["time"], done)
    metrics = gateway.get(f"/v1/jobs/{job['id']}/metrics", headers=auth("alice")).json()["epochs"]
    assert [m["epoch"] for m in metrics] == [1]


def test_a_nan_loss_is_stopped_as_diverged(gateway: TestClient, dataset_hash: str) -> None:
    job = submit(
        gateway,
        dataset_hash,
        {"EPOCHS": 6, "LOSSES": "1.0,0.8,nan", "HOLD_AFTER": 3},  # held after the NaN: the end is out of reach
        {"on_divergence": "stop"},
        tasks_per_node=2,
    )
    done = wait_for(gateway, job["id"], STOPPED, timeout_s=240)
    assert done["state"] == "diverged", done
    assert "loss is nan" in done["health_reason"], done["health_reason"]
    assert sacct_row(done["slurm_job_id"])[0].startswith("CANCELLED")
    assert not (Path(_folder(gateway, job["id"])) / "model.json").exists()  # it did not run to the end
    # The NaN shows per step (heartbeats) before its epoch's line: the job may stop before that line is written.
    metrics = gateway.get(f"/v1/jobs/{job['id']}/metrics", headers=auth("alice"))
    assert metrics.status_code == 200 and metrics.json()["state"] == "diverged"
    assert [e["loss"] for e in metrics.json()["epochs"]][:2] == [1.0, 0.8]


def test_a_plateau_stops_early_with_the_best_epoch(gateway: TestClient, dataset_hash: str) -> None:
    losses = "1.0,0.5,0.6,0.55,0.52,0.51,0.5,0.49"
    job = submit(
        gateway,
        dataset_hash,
        {"EPOCHS": 8, "LOSSES": losses, "STEPS": 2, "HOLD_AFTER": 4},  # the plateau shows at epoch 4: held there
        {"patience": 2, "min_delta": 0.01, "monitor": "loss", "mode": "min"},
    )
    done = wait_for(gateway, job["id"], STOPPED, timeout_s=240)
    assert done["state"] == "stopped_early", done
    assert done["best_epoch"] == 2
    # decided on the first epoch that showed the plateau (patience 2 after the best), not later
    assert "for 2 epochs (patience 2); best 0.5 at epoch 2" in done["health_reason"], done["health_reason"]
    assert sacct_row(done["slurm_job_id"])[0].startswith("CANCELLED")
    assert not (Path(_folder(gateway, job["id"])) / "model.json").exists()
    metrics = gateway.get(f"/v1/jobs/{job['id']}/metrics", headers=auth("alice")).json()
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2, 3, 4]
    assert (metrics["state"], metrics["best_epoch"]) == ("stopped_early", 2)


def test_silent_ranks_requeue_the_job_away_from_their_node(gateway: TestClient, dataset_hash: str) -> None:
    job = submit(
        gateway,
        dataset_hash,
        {"EPOCHS": 3, "FREEZE_AFTER": 1},
        {"hang_timeout_s": 8, "on_hang": "requeue", "max_restarts": 1},
        tasks_per_node=2,
    )
    done = wait_for(gateway, job["id"], STOPPED, timeout_s=420)
    assert done["state"] == "succeeded", done
    assert done["health_restarts"] == 1
    folder = Path(_folder(gateway, job["id"]))
    frozen_on = json.loads((folder / "freeze.0").read_text())["host"]
    runs = subprocess.run(
        ["sacct", "-D", "-X", "-n", "-P", "-j", done["slurm_job_id"], "-o", "State,NodeList"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert runs[0].split("|") == ["REQUEUED", frozen_on], runs
    assert runs[-1].split("|")[0] == "COMPLETED" and frozen_on not in runs[-1], runs
    attempts = gateway.get(f"/v1/jobs/{job['id']}/attempts", headers=auth("alice")).json()
    assert attempts[0]["node_list"] == frozen_on and f"excludes {frozen_on}" in attempts[0]["ended_by"], attempts
    assert "silent: rank 0 on" in attempts[0]["ended_by"]
    metrics = gateway.get(f"/v1/jobs/{job['id']}/metrics", headers=auth("alice")).json()["epochs"]
    # epoch 1 from the first run; the second resumed from its checkpoint instead of starting again
    assert [(m["epoch"], m["restart"]) for m in metrics] == [(1, 0), (2, 1), (3, 1)]


def _folder(client: TestClient, job_id: str) -> str:
    with Session(cast(FastAPI, client.app).state.engine) as session:
        job = session.get(Job, job_id)
        assert job is not None
        return str(Path(job.folder) / "model")


@pytest.fixture
def served(cluster: ClusterSpec, tmp_path: Path) -> Iterator[Gateway]:
    gateway = Gateway(tmp_path)
    gateway.start()
    httpx.post(
        f"{gateway.url}/v1/algorithms", json={**CLASSIFIER, "team": "team-a"}, headers=auth("admin")
    ).raise_for_status()
    yield gateway
    gateway.stop()


def test_rerun_verify_reports_an_identical_model_and_names_a_changed_world_size(served: Gateway) -> None:
    staging = served.root / "staging"
    digest = ensure_dataset(staging)
    (served.root / "datasets" / "intents").mkdir(parents=True)
    staging.rename(served.root / "datasets" / "intents" / digest)
    body = classifier_job(digest, parameters={"SEED": 7, "EPOCHS": 2, "LR": 0.3, "BATCH_SIZE": 32, "FC_SIZE": 64})
    with Client(served.url, "team-a-dev-token") as client:
        original = client.wait(client.submit(body).id, timeout_s=600)
    assert original.state.value == "succeeded", original
    recorded = original.provenance or {}
    assert recorded["world_size"] == 4 and recorded["versions"]["horovod"] == "0.28.1", recorded
    assert recorded["versions"]["torch"] and recorded["model_sha256"] and "model.pt" in recorded["model_files"]

    same = hpcgw(served, "rerun", "--verify", original.id, "--json", timeout=600)
    assert same.returncode == 0, same.stdout + same.stderr
    answer = json.loads(same.stdout)
    assert answer["status"] == "identical" and answer["differences"] == [], answer
    assert answer["original_model_sha256"] == answer["rerun_model_sha256"] == recorded["model_sha256"]

    smaller = hpcgw(served, "rerun", "--verify", original.id, "--nodes", "1", timeout=600)
    assert smaller.returncode == 1, smaller.stdout + smaller.stderr
    assert smaller.stdout.startswith("different:") and "world_size: 4 -> 2" in smaller.stdout, smaller.stdout
