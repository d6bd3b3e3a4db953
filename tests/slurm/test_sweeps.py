"""On Slurm: sweeps are real job arrays, throttled like `sbatch --array=0-N%K`."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bench.support import HPCGW
from devcluster import ClusterSpec, cluster_down, cluster_up
from devcluster.spec import ClusterSpec
from launchers import JobSpec, JobState, ListSpace, sweep
from tests.gateway.conftest import auth
from tests.slurm.support import max_overlap, python_algorithm, sacct_array

pytestmark = pytest.mark.slurm
TASK = str(Path(__file__).parent.parent / "data" / "sweep_task.py")
SWEEP_TASK = python_algorithm("sweep-task", TASK) | {"team": "team-a"}
ROOMY = {"team-a": {"max_running_jobs": 4, "max_queued_jobs": 50}}  # a sweep's tasks count against the queue


def post_sweep(
    client: TestClient, dataset: str, space: dict[str, Any], max_parallel: int, **params: str
) -> dict[str, Any]:
    client.post("/v1/algorithms", json=SWEEP_TASK, headers=auth("admin"))
    body = {
        "name": "s",
        "max_parallel": max_parallel,
        "space": space,
        "base": {
            "algorithm": "sweep-task",
            "dataset_id": "intents",
            "train_data_version_hash": dataset,
            "time_limit_min": 10,
            "parameters": params,
        },
    }
    response = client.post("/v1/sweeps", json=body, headers=auth("alice"))
    assert response.status_code == 201, response.text
    sweep: dict[str, Any] = response.json()
    return sweep


def wait_sweep(client: TestClient, sweep_id: str, timeout_s: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        sweep: dict[str, Any] = client.get(f"/v1/sweeps/{sweep_id}", headers=auth("alice")).json()
        if all(t["state"] in ("succeeded", "failed", "cancelled", "timeout") for t in sweep["tasks"]):
            return sweep
        assert time.monotonic() < deadline, sweep["counts"]
        time.sleep(0.5)


@pytest.mark.parametrize("gateway", [ROOMY], indirect=True)
def test_grid_of_12_is_one_array_with_at_most_3_running(gateway: TestClient, dataset_hash: str) -> None:
    grid = {"kind": "grid", "grid": {"LR": [0.1, 0.2, 0.3, 0.4], "BATCH_SIZE": [16, 32, 64]}}
    created = post_sweep(gateway, dataset_hash, grid, max_parallel=3, SLEEP_S="2")
    done = wait_sweep(gateway, created["id"])
    assert done["counts"] == {"succeeded": 12}
    assert len(done["array_ids"]) == 1
    rows = sacct_array(done["array_ids"][0])
    assert sorted(r[0] for r in rows) == sorted(f"{done['array_ids'][0]}_{i}" for i in range(12))
    assert {r[1] for r in rows} == {"COMPLETED"}
    assert max_overlap(rows) <= 3
    for task in done["tasks"]:
        metrics = task["final_metrics"]
        assert metrics["params"] == {"LR": task["parameters"]["LR"], "BATCH_SIZE": task["parameters"]["BATCH_SIZE"]}
        assert metrics["array_task_id"] == str(task["index"])
    best = gateway.get(f"/v1/sweeps/{done['id']}?best=accuracy:max", headers=auth("alice")).json()["best"]
    assert best["parameters"]["LR"] == "0.4" and best["parameters"]["BATCH_SIZE"] == "64"


@pytest.mark.parametrize("gateway", [ROOMY], indirect=True)
def test_cancelling_one_task_cancels_only_that_element(gateway: TestClient, dataset_hash: str) -> None:
    created = post_sweep(
        gateway, dataset_hash, {"kind": "grid", "grid": {"LR": [1, 2, 3, 4]}}, max_parallel=4, SLEEP_S="8"
    )
    victim = created["tasks"][1]["job_id"]
    deadline = time.monotonic() + 120
    while gateway.get(f"/v1/jobs/{victim}", headers=auth("alice")).json()["state"] not in ("launching", "running"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert gateway.post(f"/v1/jobs/{victim}/cancel", headers=auth("alice")).status_code == 200
    done = wait_sweep(gateway, created["id"])
    assert [t["state"] for t in done["tasks"]] == ["succeeded", "cancelled", "succeeded", "succeeded"]
    states = {r[0]: r[1] for r in sacct_array(done["array_ids"][0])}
    array = done["array_ids"][0]
    assert states[f"{array}_1"].startswith("CANCELLED")
    assert [states[f"{array}_{i}"] for i in (0, 2, 3)] == ["COMPLETED"] * 3


@pytest.mark.parametrize("gateway", [ROOMY], indirect=True)
def test_retry_failed_reruns_exactly_the_failed_tasks(
    gateway: TestClient,
    dataset_hash: str,
    tmp_path: Path,
) -> None:
    flag = tmp_path / "make-it-fail"
    flag.write_text("")
    points = [
        {"NAME": "a"},
        {"NAME": "b", "FAIL_WHILE_EXISTS": str(flag)},
        {"NAME": "c"},
        {"NAME": "d", "FAIL_WHILE_EXISTS": str(flag)},
    ]
    created = post_sweep(gateway, dataset_hash, {"kind": "list", "points": points}, max_parallel=4, SLEEP_S="1")
    first = wait_sweep(gateway, created["id"])
    assert [t["state"] for t in first["tasks"]] == ["succeeded", "failed", "succeeded", "failed"]
    assert [t["exit_code"] for t in first["tasks"]] == [0, 4, 0, 4]
    flag.unlink()  # the cause is fixed
    retried = gateway.post(f"/v1/sweeps/{created['id']}/retry-failed", headers=auth("alice")).json()
    assert [t["attempt"] for t in retried["tasks"]] == [0, 1, 0, 1]
    done = wait_sweep(gateway, created["id"])
    assert done["counts"] == {"succeeded": 4}
    assert len(done["array_ids"]) == 2
    rows = sacct_array(done["array_ids"][1])
    assert len(rows) == 2 and {r[1] for r in rows} == {"COMPLETED"}  # exactly the 2 failed tasks, as a new array
    assert {t["parameters"]["NAME"] for t in done["tasks"] if t["attempt"] == 1} == {"b", "d"}


@pytest.fixture
def small_array_cluster() -> Iterator[ClusterSpec]:
    root = Path(tempfile.mkdtemp(prefix="hpcgw-arr-", dir="/tmp"))
    root.chmod(0o755)
    spec = ClusterSpec(state_dir=root / "cluster", port_base=24800, cluster_name="hpcgwarr", max_array_size=5)
    assert cluster_up(spec).healthy
    yield spec
    cluster_down(spec.state_dir)


def test_a_sweep_past_max_array_size_is_split(
    small_array_cluster: ClusterSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLURM_CONF", small_array_cluster.slurm_env["SLURM_CONF"])
    done_dir = tmp_path / "done"
    done_dir.mkdir()
    spec = JobSpec(
        partition="team-a",
        time_limit_min=5,
        command=(sys.executable, TASK),
        folder=tmp_path / "job",
        env={"DONE_DIR": str(done_dir), "SLEEP_S": "0.5"},
    )
    jobs = sweep(spec, ListSpace(points=[{"NAME": f"t{i}"} for i in range(11)]), max_parallel=2)
    assert len(jobs) == 11
    arrays = list(dict.fromkeys(j.job_id.split("_")[0] for j in jobs))
    assert [sum(j.job_id.startswith(f"{a}_") for j in jobs) for a in arrays] == [5, 5, 1]
    assert [j.job_id.split("_")[1] for j in jobs] == [str(i % 5) for i in range(11)]
    for job in jobs:
        assert job.wait(timeout_s=300) is JobState.SUCCEEDED
    ran = sorted(p.name.split(".")[0] for p in done_dir.iterdir())
    assert ran == sorted(f"t{i}" for i in range(11))  # every task ran, and ran once
    for array in arrays:  # SLURM_CONF points at the small cluster: its own accounting
        assert {r[1] for r in sacct_array(array)} == {"COMPLETED"}


def _wait_array(array: str, count: int, timeout_s: float = 180) -> list[list[str]]:
    deadline = time.monotonic() + timeout_s
    while True:
        rows = [r for r in sacct_array(array) if "[" not in r[0]]
        if len(rows) == count and all(
            r[1] not in ("PENDING", "RUNNING", "REQUEUED") and r[3] != "Unknown" for r in rows
        ):
            return rows
        assert time.monotonic() < deadline, rows
        time.sleep(0.5)


def test_cli_array_form_picks_points_by_index(cluster: ClusterSpec, tmp_path: Path) -> None:
    points = tmp_path / "points.json"
    points.write_text(json.dumps([{"NAME": f"p{i}", "LR": i} for i in range(6)]))
    done_dir = tmp_path / "done"
    done_dir.mkdir()
    proc = subprocess.run(
        [
            HPCGW,
            "sweep",
            "--direct",
            "--array",
            "1-4%2",
            "--params-file",
            str(points),
            "-p",
            "team-b",
            "--folder",
            str(tmp_path / "job"),
            "--param",
            f"DONE_DIR={done_dir}",
            "--param",
            "SLEEP_S=0.5",
            "--json",
            "--",
            sys.executable,
            TASK,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert len(out["arrays"]) == 1 and out["max_parallel"] == 2
    assert [t["parameters"]["NAME"] for t in out["tasks"]] == ["p1", "p2", "p3", "p4"]
    rows = _wait_array(out["arrays"][0], 4)
    assert {r[1] for r in rows} == {"COMPLETED"} and max_overlap(rows) <= 2
    assert sorted(p.name.split(".")[0] for p in done_dir.iterdir()) == ["p1", "p2", "p3", "p4"]
    script = (tmp_path / "job" / f"{out['arrays'][0]}_submission.sh").read_text()
    assert "#SBATCH --array=0-3%2" in script


def test_cli_grid_form_and_bad_input(cluster: ClusterSpec, tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            HPCGW,
            "sweep",
            "--direct",
            "--grid",
            "LR=0.1,0.2",
            "--grid",
            "BATCH_SIZE=16,32,64",
            "--max-parallel",
            "3",
            "-p",
            "team-a",
            "--folder",
            str(tmp_path / "job"),
            "--param",
            "SLEEP_S=0.2",
            "--json",
            "--",
            sys.executable,
            TASK,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert [(t["parameters"]["LR"], t["parameters"]["BATCH_SIZE"]) for t in out["tasks"]] == [
        ("0.1", "16"),
        ("0.1", "32"),
        ("0.1", "64"),
        ("0.2", "16"),
        ("0.2", "32"),
        ("0.2", "64"),
    ]
    assert {r[1] for r in _wait_array(out["arrays"][0], 6)} == {"COMPLETED"}
    for args, needle in [
        (["--grid", "lr=1"], "invalid parameter name"),
        (["--grid", "LR=1", "--max-parallel", "0"], "max_parallel"),
        (["--array", "0-9", "--params-file", str(tmp_path / "none.json")], ""),
    ]:
        bad = subprocess.run(
            [HPCGW, "sweep", "--direct", *args, "-p", "team-a", "--folder", str(tmp_path / "bad"), "--", "true"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert bad.returncode == 2, (args, bad.stderr)
        assert needle in bad.stderr
