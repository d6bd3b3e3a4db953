"""What the tests on Slurm share: the algorithms they register, request bodies, and waits on recorded evidence
(the job's history in the database, sacct), never on catching a state between two polls."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import Session, col, select

from bench.support import gateway_settings, team, toml_text
from devcluster import ClusterSpec
from devcluster.users import as_gateway, hand_over
from examples.intent_classifier import IMAGE as IMAGE_PATH
from examples.intent_classifier import TRAINER_DIR, ensure_dataset
from examples.intent_classifier import in_image as in_image_spec
from gateway.config import GatewayConfig, load_config
from gateway.site import accounts
from gateway.store.models import JobEvent
from launchers.spec import JobSpec
from tests.conftest import set_up_tenancy
from tests.gateway.conftest import auth, make_config

DATA = Path(__file__).parent.parent / "data"
# The container runtime the tests on Slurm run their jobs with: Apptainer (the default of a deployment, and of the
# development cluster: `make test` builds Apptainer and the image first), or `HPCGW_TEST_RUNTIME=none` for the sites
# that run trainers on the nodes' own Python (tests/slurm/test_runtimes.py runs both either way).
RUNTIME = os.environ.get("HPCGW_TEST_RUNTIME", "apptainer")
if RUNTIME not in ("apptainer", "none"):
    raise ValueError(f"HPCGW_TEST_RUNTIME must be 'apptainer' or 'none', not {RUNTIME!r}")
IMAGE_DIR = IMAGE_PATH.parent
IMAGE = str(IMAGE_PATH)  # scripts/build-image.sh; with runtime none only a label


# Runs a tests/data script that travels in the command itself (the image holds none of the tests' files, and
# nothing of the host but the job's folders is bound): its zlib'd, base64'd source split into elements of at
# most 1,000 characters (the API caps each at 1,024), then '--' and the script's own arguments.
INLINE_LOADER = (
    "import base64, sys, zlib; i = sys.argv.index('--'); "
    "source = zlib.decompress(base64.b64decode(''.join(sys.argv[1:i]))); "
    "sys.argv = [sys.argv[0], *sys.argv[i + 1:]]; exec(compile(source, '<tests/data script>', 'exec'))"
)


def in_image(local_command: list[str]) -> list[str]:
    """The image's command for a test's ``local_command`` (this Python running a file of tests/data, or ``-c``
    code). Under Apptainer a script's source travels in the command (:data:`INLINE_LOADER`). Under runtime none
    the image's command is never run, and names the script."""
    assert local_command[0] == sys.executable, local_command
    if local_command[1] == "-c" or RUNTIME == "none":
        return ["python", *local_command[1:]]
    packed = base64.b64encode(zlib.compress(Path(local_command[1]).read_bytes(), 9)).decode()
    chunks = [packed[i : i + 1000] for i in range(0, len(packed), 1000)]
    return ["python", "-c", INLINE_LOADER, *chunks, "--", *local_command[2:]]


def in_runtime(spec: JobSpec, *folders: Path) -> JobSpec:
    """``spec`` (a runtime-'none' spec of the classifier, examples.intent_classifier) under the tests' runtime: with
    Apptainer its trainer is the image's copy, and ``folders`` (its work folder, its dataset) are bound at their
    own paths."""
    return spec if RUNTIME == "none" else in_image_spec(spec, Path(IMAGE), *folders)


def python_algorithm(name: str, *args: str | Path) -> dict[str, Any]:
    """An algorithm version whose trainer is this Python running ``args`` (a tests/data script and its arguments,
    or ``-c`` and code), the image's Python running the same (:func:`in_image`)."""
    local = [sys.executable, *map(str, args)]
    return {"name": name, "version": "1", "image": IMAGE, "command": in_image(local), "local_command": local}


CLASSIFIER = {
    "name": "intent-classifier",
    "version": "1.0",
    "image": IMAGE,
    "command": ["python", "/opt/intent-classifier/train.py"],
    "local_command": [sys.executable, str(TRAINER_DIR / "train.py")],
}
SLEEPER = {
    "name": "sleeper",
    "version": "1",
    "image": IMAGE,
    "command": ["sleep", "600"],
    "local_command": [sys.executable, "-c", "import time; time.sleep(600)"],
}
QUICK = python_algorithm("quick", "-c", "print('quick trainer done')")
ENV_PRINTER = python_algorithm("env-printer", DATA / "print_env.py", "A,B,C,D,JOB_ID,SEED")


def runtime_settings(runtime: str = RUNTIME, *, functions: bool = True) -> dict[str, object]:
    """A gateway configuration's keys for ``runtime``: with Apptainer the image's folder is the one image root,
    and (``functions``) functions run in the same image (it holds submitit and cloudpickle)."""
    if runtime == "none":
        return {"container_runtime": "none"}
    settings: dict[str, object] = {"container_runtime": "apptainer", "image_roots": [str(IMAGE_DIR)]}
    return settings | ({"functions": {"image": IMAGE}} if functions else {})


def gateway_config(tmp_path: Path, *, runtime: str = RUNTIME, **teams: dict[str, Any]) -> GatewayConfig:
    config = make_config(
        tmp_path, f"sqlite:///{tmp_path}/gw.db", poll={"interval_s": 2.0, "floor_s": 0.2}, **runtime_settings(runtime)
    )
    for name, limits in teams.items():
        config.teams[name] = config.teams[name].model_copy(update=limits)
    return config


def classifier_job(dataset_hash: str, **overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "name": "classifier",
        "algorithm": "intent-classifier",
        "dataset_id": "intents",
        "train_data_version_hash": dataset_hash,
        "nodes": 2,
        "tasks_per_node": 2,
        "time_limit_min": 15,
        "parameters": {"SEED": 7, "EPOCHS": 3, "LR": 0.3, "BATCH_SIZE": 32, "FC_SIZE": 64},
    }
    return body | overrides


def sleeper_job(dataset_hash: str, **overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "name": "sleeper",
        "algorithm": "sleeper",
        "dataset_id": "intents",
        "train_data_version_hash": dataset_hash,
        "time_limit_min": 10,
    }
    return body | overrides


def wait_for(
    client: TestClient, job_id: str, states: set[str], user: str = "alice", timeout_s: float = 300
) -> dict[str, Any]:
    """Wait until the job has reached one of ``states``, as its recorded history shows (a phase shorter than a
    poll is still recorded, from Slurm's start time and the start marker); returns the job as it is now."""
    deadline = time.monotonic() + timeout_s
    while True:
        reached = states & {e.state for e in history(client, job_id)}  # read before the job: it is at or past it
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}", headers=auth(user)).json()
        if job["state"] in states or reached:
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job['state']}: {job}"
        time.sleep(0.2)


def reached_at(client: TestClient, job_id: str, state: str) -> str:
    """When the job entered ``state`` (ISO, UTC), from its history."""
    return next(e.at for e in history(client, job_id) if e.state == state).isoformat()


def history(client: TestClient, job_id: str) -> list[JobEvent]:
    with Session(cast(FastAPI, client.app).state.engine) as session:
        return list(session.exec(select(JobEvent).where(JobEvent.job_id == job_id).order_by(col(JobEvent.id))))


def sacct_row(slurm_job_id: str, fields: str = "State,Partition,NNodes,ExitCode") -> list[str]:
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-j", slurm_job_id, "-o", fields], capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0].split("|")


def sacct_rows(job_id: str, fields: str) -> list[list[str]]:
    """Accounting's allocation rows of a job or array (``-X``), each as its ``fields``."""
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-j", job_id, "-o", fields], capture_output=True, text=True, check=True
    ).stdout
    return [line.split("|") for line in out.splitlines() if line]


def accounted(job_id: str) -> list[str]:
    """Accounting's rows (``JobIDRaw|Comment``, ``-X``) of the last hour whose comment names the gateway's job
    ``job_id``."""
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-S", "now-1hours", "-o", "JobIDRaw,Comment"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line for line in out.splitlines() if line.endswith(f"|hpcgw:{job_id}")]


def sacct_array(array_id: str) -> list[list[str]]:
    return sacct_rows(array_id, "JobID,State,Start,End")


def max_overlap(rows: list[list[str]]) -> int:
    """Most tasks running at one moment, from sacct's start and end times (an end before a start at a tie)."""
    events = []
    for _, _, start, end in rows:
        events += [(datetime.fromisoformat(start), 1), (datetime.fromisoformat(end), -1)]
    running = peak = 0
    for _, delta in sorted(events, key=lambda e: (e[0], e[1])):
        running += delta
        peak = max(peak, running)
    return peak


def serve_settings(root: Path, **overrides: Any) -> dict[str, Any]:
    """The configuration of a gateway that a test runs as `hpcgw serve` (:func:`bench.support.gateway_settings`),
    its files under ``root``: the tests' runtime, a 1 s poll; ``overrides`` passed on."""
    settings: dict[str, Any] = {"poll": {"interval_s": 1.0, "floor_s": 0.2}, **runtime_settings(functions=False)}
    return gateway_settings(root, **(settings | overrides))


def write_config(
    path: Path, root: Path, *, max_running_jobs: int = 4, max_queued_jobs: int = 100, **overrides: Any
) -> Path:
    """:func:`serve_settings` written to ``path``: team-a with 2 nodes, ``max_running_jobs`` and
    ``max_queued_jobs``, team-b with the defaults; ``overrides``: more top-level keys (rate_limits, ...)."""
    limits = {"max_nodes": 2, "max_running_jobs": max_running_jobs, "max_queued_jobs": max_queued_jobs}
    teams = {"team-a": team("team-a", **limits), "team-b": team("team-b")}
    path.write_text(toml_text(serve_settings(root, teams=teams, **overrides)))
    return path


def serve(argv: list[str], log: Any, *, path_prefix: Path | None = None) -> subprocess.Popen[bytes]:
    """Start ``argv`` (an ``hpcgw serve`` command line) as the gateway's own user, as a deployment runs it: the
    folder of its ``--config`` (its database, its job root) and the file itself become that user's first."""
    config = Path(argv[argv.index("--config") + 1])
    hand_over(config.parent, config)
    kwargs = as_gateway()
    env = dict(kwargs.pop("env", os.environ))
    if path_prefix is not None:
        env["PATH"] = f"{path_prefix}:{env['PATH']}"
    return subprocess.Popen(argv, stdout=log, stderr=log, env=env, **kwargs)


NO_RATE_LIMIT = {"per_token": {"per_min": 100000, "burst": 100000}, "per_team": {"per_min": 100000, "burst": 100000}}


def quick_job(dataset_hash: str, key: str | None = None) -> dict[str, object]:
    return sleeper_job(dataset_hash, algorithm="quick", time_limit_min=5, idempotency_key=key)


ENDED = {"succeeded", "failed", "cancelled", "timeout"}


def wait_all_ended(base: str, ids: list[str], timeout_s: float) -> dict[str, str]:
    """The states of the jobs ``ids``, as alice reads them from the gateway at ``base``, once all have ended or
    ``timeout_s`` has passed."""

    def get(job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = httpx.get(f"{base}/v1/jobs/{job_id}", headers=auth("alice"), timeout=10).json()
        return job

    deadline = time.monotonic() + timeout_s
    states: dict[str, str] = {}
    while True:
        states = {i: get(i)["state"] for i in ids if states.get(i) not in ENDED} | {
            i: s for i, s in states.items() if s in ENDED
        }
        if all(s in ENDED for s in states.values()) or time.monotonic() > deadline:
            return states
        time.sleep(1)


@contextmanager
def roomy_accounts(config: Path) -> Iterator[None]:
    """Slurm's limits for the teams of ``config`` (the example's allow 2 running jobs a team: 300 jobs would take
    minutes), then the example's again."""
    accounts.sync(load_config(config))
    try:
        yield
    finally:
        set_up_tenancy(ClusterSpec.load() or ClusterSpec())


def submit_until_answered(base: str, body: dict[str, object], deadline: float) -> tuple[int, str]:
    """POST until the gateway answers with a job (through its kills); returns the final status and the job id."""
    while True:
        try:
            response = httpx.post(f"{base}/v1/jobs", json=body, headers=auth("alice"), timeout=10)
            if response.status_code in (200, 201):
                return response.status_code, response.json()["id"]
            assert response.status_code in (429, 503), response.text
        except httpx.TransportError:
            pass  # killed mid-request: the same key again
        assert time.monotonic() < deadline, f"no answer for {body['idempotency_key']}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("intents")
    ensure_dataset(directory)
    return directory


def metrics(path: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in path.read_text().splitlines()]
