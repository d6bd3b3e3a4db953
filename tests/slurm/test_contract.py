"""On Slurm: schemathesis against ``hpcgw serve`` (the real service, its worker, a test database), every phase
and every check, with the development tokens. Its summary goes to the test output; 0 failures of any kind.

Real ids (a job, a sweep) and a runnable request's values (the registered algorithm, the dataset and its hash)
are in schemathesis's dictionaries, drawn half of the time: the cases reach past "not found" and "unknown
algorithm" into cancels, reruns and real submissions, which the rate limit then meets.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from bench.support import HPCGW
from devcluster.spec import ClusterSpec
from gateway.client import wait_healthy
from tests.gateway.conftest import auth
from tests.slurm.support import QUICK, serve, sleeper_job, write_config

pytestmark = pytest.mark.slurm

ST = str(Path(sys.executable).with_name("st"))
SETTINGS = Path(__file__).parent.parent / "data" / "schemathesis.toml"
PORT = 18951
# Tight enough that the fuzzing meets it (429 with Retry-After is part of the contract under test).
RATE_LIMITS = {"per_token": {"per_min": 60, "burst": 10}, "per_team": {"per_min": 120, "burst": 20}}


def _settings(path: Path, **dictionaries: list[str]) -> Path:
    tables = "".join(
        f"\n[dictionaries.{name}]\nvalues = {json.dumps(values)}\n" for name, values in dictionaries.items()
    )
    bindings = {
        "path.job_id": "jobs",
        "path.sweep_id": "sweeps",
        "body.algorithm": "algorithms",
        "body.dataset_id": "datasets",
        "body.train_data_version_hash": "hashes",
        "body.base.algorithm": "algorithms",
        "body.base.dataset_id": "datasets",
        "body.base.train_data_version_hash": "hashes",
    }
    parameters = "".join(
        f'"{key}" = {{ dictionary = "{name}", probability = 0.5 }}\n' for key, name in bindings.items()
    )
    path.write_text(SETTINGS.read_text() + tables + "\n[parameters]\n" + parameters)
    return path


@pytest.mark.parametrize("user", ["alice", "admin"])
def test_the_api_keeps_its_documented_contract(
    cluster: ClusterSpec, tmp_path: Path, dataset_hash: str, user: str
) -> None:
    config = write_config(tmp_path / "gateway.toml", tmp_path, rate_limits=RATE_LIMITS)
    base = f"http://127.0.0.1:{PORT}"
    with open(tmp_path / "gateway.log", "ab") as log:
        gateway = serve([HPCGW, "serve", "--config", str(config), "--port", str(PORT)], log)
        try:
            wait_healthy(base, alive=lambda: gateway.poll() is None)
            registered = httpx.post(f"{base}/v1/algorithms", json={**QUICK, "team": "team-a"}, headers=auth("admin"))
            assert registered.status_code == 201, registered.text
            job = httpx.post(
                f"{base}/v1/jobs", json=sleeper_job(dataset_hash, algorithm="quick"), headers=auth("alice")
            ).json()
            sweep = httpx.post(
                f"{base}/v1/sweeps",
                json={
                    "base": sleeper_job(dataset_hash, algorithm="quick"),
                    "space": {"kind": "grid", "grid": {"SEED": [1, 2]}},
                    "max_parallel": 2,
                },
                headers=auth("alice"),
            ).json()
            settings = _settings(
                tmp_path / "schemathesis.toml",
                jobs=[job["id"], sweep["tasks"][0]["job_id"]],
                sweeps=[sweep["id"]],
                algorithms=["quick"],
                datasets=["intents"],
                hashes=[dataset_hash],
            )
            run = subprocess.run(
                [
                    ST,
                    "--no-color",
                    "--config-file",
                    str(settings),
                    "run",
                    f"{base}/openapi.json",
                    "--header",
                    f"Authorization: {auth(user)['Authorization']}",
                    "--checks",
                    "all",
                    "--phases",
                    "examples,coverage,fuzzing,stateful",
                    "--max-examples",
                    "40",
                    "--seed",
                    "20261123",
                    # One thread: Python 3.11's ast.parse is not safe across threads (CPython gh-106905), and
                    # Hypothesis parses lambdas' source to print its strategies. With two, a run once stopped on
                    # "SystemError: AST constructor recursion depth mismatch" inside schemathesis's own fuzzing.
                    "--workers",
                    "1",
                    "--request-timeout",
                    "20",
                ],
                capture_output=True,
                text=True,
                timeout=900,
                cwd=tmp_path,  # its cache (.schemathesis/) stays out of the repository
            )
        finally:
            gateway.terminate()
            gateway.wait(timeout=60)
    print(run.stdout[run.stdout.find("SUMMARY") :])  # schemathesis's summary, in the test's output
    gateway_log = (tmp_path / "gateway.log").read_text(errors="replace")
    assert run.returncode == 0, f"{run.stdout[-20000:]}\n{run.stderr[-3000:]}\ngateway log:\n{gateway_log[-4000:]}"
    assert "Traceback" not in gateway_log, gateway_log[-6000:]
