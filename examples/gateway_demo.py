"""`make demo`: the whole story on the local cluster, over HTTP.

The gateway starts (config/example.toml), the intent-classifier algorithm is registered, a 2-node x 2-task
Horovod job is submitted with team-a's token, its states are printed as they change until it ends, and then
its per-epoch metrics. Exits 0 only if the job succeeded.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from devcluster.users import as_gateway
from examples.intent_classifier import IMAGE, IMAGE_TRAINER_DIR, TRAINER_DIR, ensure_dataset
from gateway.client import ClientError, wait_healthy
from gateway.config import load_config

REPO = Path(__file__).resolve().parent.parent
TEAM_A = {"Authorization": "Bearer team-a-dev-token"}
ADMIN = {"Authorization": "Bearer admin-dev-token"}


def stage_dataset(dataset_root: Path) -> str:
    staging = dataset_root / ".staging-intents"
    shutil.rmtree(staging, ignore_errors=True)
    digest = ensure_dataset(staging)
    target = dataset_root / "intents" / digest
    if target.exists():
        shutil.rmtree(staging)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(target)
    return digest


def register(base: str, algorithm: dict[str, object]) -> None:
    """The algorithm version, once; after that, its image pinned again when ``make image`` rebuilt the file (a
    pinned version refuses a file with other bytes: re-registering is the explicit step that lets it run)."""
    name, version = algorithm["name"], algorithm["version"]
    created = httpx.post(f"{base}/v1/algorithms", json=algorithm, headers=ADMIN)
    if created.status_code == 409:  # the algorithm exists: this version may not yet
        body = {k: v for k, v in algorithm.items() if k not in ("name", "team", "description")}
        created = httpx.post(f"{base}/v1/algorithms/{name}/versions", json=body, headers=ADMIN)
    if created.status_code == 201:
        pinned = next(v for v in created.json()["versions"] if v["version"] == version)["image_digest"]
        print(f"algorithm {name} {version} registered: {algorithm['image']} ({pinned or 'no digest'})")
        return
    before = next((a for a in httpx.get(f"{base}/v1/algorithms", headers=ADMIN).json() if a["name"] == name), None)
    old = next((v["image_digest"] for v in (before or {}).get("versions", []) if v["version"] == version), None)
    answer = httpx.post(f"{base}/v1/algorithms/{name}/versions/{version}/digest", headers=ADMIN)
    answer.raise_for_status()
    new = next(v for v in answer.json()["versions"] if v["version"] == version)["image_digest"]
    change = f"re-pinned from {old} to" if old != new else "pinned to"
    print(f"algorithm {name} {version}: already registered, its image {change} {new}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.gateway_demo", description=__doc__)
    parser.add_argument("--config", type=Path, default=REPO / "config" / "example.toml")
    parser.add_argument("--port", type=int, default=8787)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args(argv)

    config = load_config(args.config)
    digest = stage_dataset(config.dataset_root)
    log_path = REPO / ".hpcgw" / "gateway" / "demo-gateway.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    base = f"http://127.0.0.1:{args.port}"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("hpcgw")),
                "serve",
                "--config",
                str(args.config),
                "--port",
                str(args.port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            **{"env": os.environ.copy(), **as_gateway()},  # as the gateway's own user, never root
        )
    try:
        try:
            wait_healthy(base, alive=lambda: proc.poll() is None)
        except ClientError as exc:
            raise SystemExit(f"{exc}; see {log_path}") from None
        print(f"gateway up at {base} (log: {log_path})")
        return run_story(base, digest, args.epochs, config.container_runtime == "apptainer")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def run_story(base: str, digest: str, epochs: int, apptainer: bool) -> int:
    version = "1.0" if apptainer else "1.0-bare"  # under runtime none the trainer runs on the nodes' own Python
    algorithm = {
        "name": "intent-classifier",
        "version": version,
        "team": "team-a",
        "image": str(IMAGE),
        "command": ["python", f"{IMAGE_TRAINER_DIR}/train.py"],
        "description": "Horovod intent classifier (embedding bag + FC)",
    }
    if not apptainer:
        algorithm["local_command"] = [sys.executable, str(TRAINER_DIR / "train.py")]
    register(base, algorithm)
    request = {
        "name": "demo-intents",
        "algorithm": "intent-classifier",
        "dataset_id": "intents",
        "train_data_version_hash": digest,
        "algorithm_version": version,
        "nodes": 2,
        "tasks_per_node": 2,
        "time_limit_min": 15,
        "parameters": {"SEED": 7, "EPOCHS": epochs, "LR": 0.3, "BATCH_SIZE": 32, "FC_SIZE": 64},
    }
    response = httpx.post(f"{base}/v1/jobs", json=request, headers=TEAM_A)
    response.raise_for_status()
    job = response.json()
    print(
        f"submitted job {job['id']} for team {job['team']} (user {job['user']}): 2 nodes x 2 tasks, "
        f"{job['algorithm']} {job['algorithm_version']}"
    )
    started, last = time.monotonic(), ""
    while True:
        job = httpx.get(f"{base}/v1/jobs/{job['id']}", headers=TEAM_A).json()
        shown = [f"Slurm job {job['slurm_job_id']}, {job['slurm_state']}"] if job["slurm_job_id"] else []
        shown += [f"reason {job['reason']}"] if job["reason"] else []
        shown += [f"position {job['position_in_queue']}"] if job["position_in_queue"] else []
        line = job["state"] + (f" ({', '.join(shown)})" if shown else "")
        if line != last:  # a line only for a change it shows
            print(f"[{time.monotonic() - started:6.1f}s] {line}", flush=True)
            last = line
        if job["state"] in ("succeeded", "failed", "cancelled", "timeout") or time.monotonic() - started > 900:
            break
        time.sleep(0.5)
    metrics = httpx.get(f"{base}/v1/jobs/{job['id']}/metrics", headers=TEAM_A).json()["epochs"]
    for m in metrics:
        print(f"  epoch {m['epoch']}: loss {m['loss']:.4f}  held-out accuracy {m['accuracy']:.3f}")
    print(f"exit code {job['exit_code']}, restarts {job['restarts']}, {len(metrics)} epochs recorded")
    return 0 if job["state"] == "succeeded" and len(metrics) == epochs else 1


if __name__ == "__main__":
    sys.exit(main())
