"""On Slurm: the real `hpcgw` executable against a real gateway (`hpcgw serve`) on the real cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bench.support import HPCGW
from devcluster.spec import ClusterSpec
from gateway.client import Client
from tests.slurm.cli_support import DATA, Gateway, gw, hpcgw  # noqa: F401  (gw: the fixture)
from tests.slurm.support import IMAGE, RUNTIME

pytestmark = pytest.mark.slurm


def test_submit_wait_exit_codes_jobs_and_logs(gw: Gateway) -> None:
    ok = hpcgw(gw, "submit", "--algorithm", "hello", *DATA, "-J", "greet", "--wait", "--json")
    assert ok.returncode == 0, ok.stderr
    job = json.loads(ok.stdout)
    assert job["state"] == "succeeded" and job["team"] == "team-a"
    bad = hpcgw(gw, "submit", "--algorithm", "fail3", *DATA, "--wait")
    assert bad.returncode == 3, bad.stderr
    listed = json.loads(hpcgw(gw, "jobs", "--json").stdout)["items"]
    assert {(j["name"], j["team"], j["state"]) for j in listed} >= {
        ("greet", "team-a", "succeeded"),
        ("train", "team-a", "failed"),
    }
    table = hpcgw(gw, "jobs")
    row = next(line for line in table.stdout.splitlines() if line.startswith(job["id"]))
    assert table.returncode == 0 and row.split()[4] == "CD", table.stdout  # squeue's code for completed
    assert "succeeded" in hpcgw(gw, "jobs", "-o", "%i %T").stdout
    logs = hpcgw(gw, "logs", job["id"], "--rank", "0")
    assert logs.returncode == 0 and "hello from the trainer" in logs.stdout
    status = hpcgw(gw, "status", job["id"])
    assert status.returncode == 0 and "exit_code: 0" in status.stdout


def test_cancel_and_render(gw: Gateway) -> None:
    submitted = hpcgw(gw, "submit", "--algorithm", "sleep", *DATA, "--param", "S=300", "--json")
    job_id = json.loads(submitted.stdout)["id"]
    cancelled = hpcgw(gw, "cancel", job_id)
    assert cancelled.returncode == 0, cancelled.stderr
    deadline = time.monotonic() + 60
    while (state := json.loads(hpcgw(gw, "status", job_id, "--json").stdout)["state"]) != "cancelled":
        assert time.monotonic() < deadline, state
        time.sleep(0.5)
    assert hpcgw(gw, "cancel", "nonexistent").returncode == 1
    script = hpcgw(
        gw,
        "render",
        "--algorithm",
        "hello",
        *DATA,
        "-N",
        "2",
        "--ntasks-per-node",
        "2",
        "-c",
        "1",
        "-t",
        "1:30:00",
        "--mem",
        "2G",
    )
    assert script.returncode == 0, script.stderr
    lines = script.stdout.splitlines()
    for expected in (
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=2",
        "#SBATCH --cpus-per-task=1",
        "#SBATCH --time=90",
        "#SBATCH --mem=2048M",
        "#SBATCH --partition=team-a",
        "#SBATCH --account=team-a",
    ):
        assert expected in lines, (expected, script.stdout)
    bad = hpcgw(gw, "render", "--algorithm", "nope", *DATA)
    assert bad.returncode == 1 and "unknown algorithm" in bad.stderr
    assert hpcgw(gw, "submit", "--algorithm", "hello", *DATA, "-t", "soon").returncode == 2


def test_client_wait_survives_a_gateway_restart(gw: Gateway) -> None:
    with Client(gw.url, "team-a-dev-token", backoff_s=0.2, retries=50) as c:
        job = c.submit(
            {"algorithm": "sleep", "dataset_id": "d", "train_data_version_hash": "v1", "parameters": {"S": "6"}}
        )
        seen: list[str] = []

        def restart() -> None:
            time.sleep(1.5)
            gw.stop()
            time.sleep(2)
            gw.start()

        thread = threading.Thread(target=restart)
        thread.start()
        final = c.wait(job.id, timeout_s=120, poll_s=0.3, on_change=lambda j: seen.append(j.state.value))
        thread.join()
    assert final.state.value == "succeeded"
    assert seen[0] in ("accepted", "queued") and seen[-1] == "succeeded"


def test_the_notebook_example_runs(gw: Gateway) -> None:
    from examples.intent_classifier import TRAINER_DIR, ensure_dataset

    staging = gw.root / "staging"
    digest = ensure_dataset(staging)
    (gw.root / "datasets" / "intents").mkdir(parents=True)
    staging.rename(gw.root / "datasets" / "intents" / digest)
    env = {
        **os.environ,
        "HPCGW_URL": gw.url,
        "HPCGW_TOKEN": "team-a-dev-token",
        "HPCGW_ADMIN_TOKEN": "admin-dev-token",  # a local_command is an admin's to register (issue 29)
        "DEMO_DATA_VERSION": digest,
        "DEMO_IMAGE": IMAGE,
        **({"DEMO_TRAINER": str(TRAINER_DIR / "train.py")} if RUNTIME == "none" else {}),
    }
    example = Path(__file__).parent.parent.parent / "docs" / "examples" / "notebook.py"
    proc = subprocess.run([sys.executable, str(example)], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "final state: succeeded" in proc.stdout and "epoch 2: accuracy" in proc.stdout


def test_direct_submit_uses_the_same_flags_without_a_gateway(cluster: ClusterSpec, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("HPCGW_URL", "HPCGW_TOKEN")}
    ok = subprocess.run(
        [
            HPCGW,
            "submit",
            "--direct",
            "-p",
            "team-a",
            "-N",
            "2",
            "--ntasks-per-node",
            "2",
            "-t",
            "5",
            "--folder",
            str(tmp_path / "ok"),
            "--wait",
            "--json",
            "--",
            sys.executable,
            "-m",
            "examples.smoke",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["state"] == "succeeded"
    failing = str(Path(__file__).parent.parent / "data" / "fail_on_rank.py")
    bad = subprocess.run(
        [
            HPCGW,
            "submit",
            "--direct",
            "-p",
            "team-a",
            "-N",
            "2",
            "--ntasks-per-node",
            "2",
            "--param",
            "FAIL_RANK=2",
            "--param",
            "FAIL_CODE=3",
            "--folder",
            str(tmp_path / "bad"),
            "--wait",
            "--",
            sys.executable,
            failing,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert bad.returncode == 3, bad.stderr
    too_big = subprocess.run(
        [HPCGW, "submit", "--direct", "-p", "team-a", "-N", "3", "--folder", str(tmp_path / "big"), "--", "true"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert too_big.returncode == 2 and "nodes" in too_big.stderr


def test_sweep_through_the_gateway(gw: Gateway, tmp_path: Path) -> None:
    ok = hpcgw(
        gw,
        "sweep",
        "--grid",
        "LR=1,2",
        "--grid",
        "FC_SIZE=8,16",
        "--max-parallel",
        "2",
        "--algorithm",
        "hello",
        *DATA,
        "--wait",
    )
    assert ok.returncode == 0, ok.stderr
    assert "4 tasks, at most 2 at once" in ok.stdout and "succeeded=4" in ok.stdout
    points = tmp_path / "p.json"
    points.write_text(json.dumps([{"S": "0"}, {"S": "x"}]))  # the second makes the sleep trainer fail
    bad = hpcgw(
        gw, "sweep", "--array", "0-1%1", "--params-file", str(points), "--algorithm", "sleep", *DATA, "--wait", "--json"
    )
    assert bad.returncode == 1, bad.stderr
    assert json.loads(bad.stdout)["counts"] == {"succeeded": 1, "failed": 1}
