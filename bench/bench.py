"""What the gateway costs on top of Slurm, measured side by side in one process on the local cluster.

Run with `make bench` (or `python -m bench.bench`). It prints one table and writes the raw figures to
bench/results/<timestamp>.json. Every comparison runs back to back on the same cluster; figures are medians
(and p95/p99 where asked) over repeated runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from devcluster import use_local_cluster  # noqa: E402
from examples.intent_classifier import ensure_dataset  # noqa: E402
from gateway.client import wait_healthy  # noqa: E402
from gateway.config import GatewayConfig  # noqa: E402
from gateway.db import make_engine, migrate  # noqa: E402
from gateway.models import Job  # noqa: E402
from gateway.worker.loop import Worker  # noqa: E402
from launchers import JobSpec, ListSpace, submit, sweep  # noqa: E402
from launchers.runtime.markers import JobMarkers  # noqa: E402

TOKEN = {"Authorization": "Bearer team-a-dev-token"}
TEAM_B = {"Authorization": "Bearer team-b-dev-token"}
ADMIN = {"Authorization": "Bearer admin-dev-token"}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50_ms": statistics.median(values) * 1e3,
        "p95_ms": pct(values, 95) * 1e3,
        "p99_ms": pct(values, 99) * 1e3,
    }


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def sbatch_hold() -> str:
    out = subprocess.run(
        ["sbatch", "--parsable", "--hold", "-p", "team-a", "-o", "/dev/null", "--wrap", "true"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip().split(";")[0]


def scancel_all() -> None:
    subprocess.run(["scancel", "-u", os.environ.get("USER", "root")], check=False)
    for _ in range(120):
        if not subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.strip():
            return
        time.sleep(0.5)


# --- the gateway under test ------------------------------------------------------------------------------------

CONFIG = """
dev_mode = true
database_url = "sqlite:///{root}/bench.db"
dataset_root = "{root}/datasets"
job_root = "{root}/jobs"
container_runtime = "none"
[poll]
interval_s = 2.0
floor_s = 0.2
[teams.team-a]
partitions = ["team-a"]
account = "team-a"
max_nodes = 2
max_running_jobs = 2000
max_queued_jobs = 5000
[teams.team-b]
partitions = ["team-b"]
account = "team-b"
max_nodes = 2
max_running_jobs = 2000
max_queued_jobs = 5000
[[tokens]]
user = "bob"
team = "team-b"
token = "team-b-dev-token"
[[tokens]]
user = "alice"
team = "team-a"
token = "team-a-dev-token"
[[tokens]]
user = "admin"
role = "admin"
token = "admin-dev-token"
"""


@contextmanager
def gateway(root: Path) -> Iterator[str]:
    (root / "gateway.toml").write_text(CONFIG.format(root=root))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(root / "gateway.log", "ab")
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("hpcgw")),
            "serve",
            "--config",
            str(root / "gateway.toml"),
            "--port",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, alive=lambda: proc.poll() is None)
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()


def register(base: str, root: Path) -> str:
    digest = ensure_dataset(root / "staging")
    target = root / "datasets" / "intents" / digest
    target.parent.mkdir(parents=True, exist_ok=True)
    (root / "staging").rename(target)
    quick = {
        "name": "quick",
        "version": "1",
        "team": "team-a",
        "image": "quick.sif",
        "command": ["true"],
        "local_command": [sys.executable, "-c", "pass"],
    }
    smoke = {
        "name": "allreduce",
        "version": "1",
        "team": "team-a",
        "image": "smoke.sif",
        "command": ["true"],
        "local_command": [sys.executable, "-m", "examples.smoke"],
    }
    for algorithm in (quick, smoke):
        httpx.post(f"{base}/v1/algorithms", json=algorithm, headers=ADMIN).raise_for_status()
    return digest


def request(digest: str, algorithm: str = "quick", **extra: Any) -> dict[str, Any]:
    return {
        "name": "bench",
        "algorithm": algorithm,
        "dataset_id": "intents",
        "train_data_version_hash": digest,
        "time_limit_min": 5,
        **extra,
    }


# --- 1. submission ---------------------------------------------------------------------------------------------


def bench_submission(root: Path, base: str, digest: str, n: int) -> dict[str, Any]:
    """The three single-client methods interleaved, one of each per round, so that all see the same load
    (the gateway's worker submits the POSTed jobs in the background on this 2-core machine)."""
    spec = JobSpec(
        partition="team-a", command=("true",), folder=root / "launch", extra_sbatch=("--hold",), time_limit_min=5
    )
    raw, launched, one = [], [], []
    with httpx.Client(headers=TOKEN) as client:
        for _ in range(n):
            raw.append(timed(sbatch_hold))
            launched.append(timed(lambda: submit(spec)))
            one.append(timed(lambda: client.post(f"{base}/v1/jobs", json=request(digest)).raise_for_status()))
    scancel_all()

    def post() -> float:
        with httpx.Client(headers=TOKEN) as c:
            return timed(lambda: c.post(f"{base}/v1/jobs", json=request(digest)).raise_for_status())

    started = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        sixteen = list(pool.map(lambda _: post(), range(n * 4)))
    concurrent_s = time.perf_counter() - started
    time.sleep(3)
    scancel_all()
    return {
        "raw_sbatch": summary(raw) | {"per_s": n / sum(raw)},
        "launchers_submit": summary(launched) | {"per_s": n / sum(launched)},
        "post_1_client": summary(one) | {"per_s": n / sum(one)},
        "post_16_clients": summary(sixteen) | {"per_s": len(sixteen) / concurrent_s},
    }


# --- 2. tracking -----------------------------------------------------------------------------------------------


def bench_tracking(root: Path, counts: list[int], cycles: int) -> dict[str, Any]:
    """Held jobs linked into a gateway database; then the worker's poll cycles, measured one by one."""
    config = GatewayConfig.model_validate(
        {
            "dev_mode": True,
            "database_url": f"sqlite:///{root}/tracking.db",
            "dataset_root": str(root),
            "job_root": str(root / "tj"),
            "teams": {"team-a": {"partitions": ["team-a"], "account": "team-a"}},
            "tokens": [{"user": "a", "team": "team-a", "token": "x" * 30}],
        }
    )
    engine = make_engine(config.database_url)
    migrate(engine)
    worker = Worker(engine, config)
    results: dict[str, Any] = {}
    ids: list[str] = []
    from sqlmodel import Session, select

    for count in counts:
        while len(ids) < count:
            ids.append(sbatch_hold())
        with Session(engine) as session:
            known = set(session.exec(select(Job.slurm_job_id)).all())
            for slurm_id in ids:
                if slurm_id not in known:
                    session.add(
                        Job(
                            name="b",
                            team="team-a",
                            user="a",
                            state="queued",
                            slurm_job_id=slurm_id,
                            partition="team-a",
                            account="team-a",
                            nodes=1,
                            tasks_per_node=1,
                            gpus_per_node=0,
                            cpus_per_task=1,
                            time_limit_min=5,
                            algorithm="quick",
                            algorithm_version="1",
                            image="q",
                            command=["true"],
                            dataset_id="d",
                            train_data_version_hash="h",
                            parameters={},
                            folder=str(root / "tj"),
                            submit_folder=str(root / "tj"),
                        )
                    )
            session.commit()
        commands, cpu, wall = [], [], []
        for _ in range(cycles):
            before_cmd = worker.stats.slurm_commands
            before_cpu = _cpu()
            wall.append(timed(worker.poll))
            cpu.append(_cpu() - before_cpu)
            commands.append(worker.stats.slurm_commands - before_cmd)
        results[str(count)] = {
            "slurm_commands_per_cycle": max(commands),
            "cpu_s_per_cycle": statistics.median(cpu),
            "wall_s_per_cycle": statistics.median(wall),
        }
    engine.dispose()
    return results


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def bench_get(root: Path, base: str, digest: str, jobs: int, gets: int) -> dict[str, Any]:
    """GET latency while the worker follows ``jobs`` active jobs: team-b's partition is set DOWN, so its jobs
    stay pending in Slurm (really tracked, never running) while the GETs are timed."""
    subprocess.run(["scontrol", "update", "PartitionName=team-b", "State=DOWN"], check=True)
    try:
        with httpx.Client(headers=TEAM_B) as client:
            ids = [client.post(f"{base}/v1/jobs", json=request(digest)).json()["id"] for _ in range(jobs)]
            deadline = time.monotonic() + 600
            while client.get(f"{base}/v1/jobs?state=accepted&limit=1").json()["total"] > 0:
                if time.monotonic() > deadline:
                    raise TimeoutError("the gateway did not dispatch the jobs within 600 s")
                time.sleep(1)
            tracked = client.get(f"{base}/v1/jobs?state=queued&limit=1").json()["total"]
            latencies = [
                timed(lambda i=i: client.get(f"{base}/v1/jobs/{ids[i % len(ids)]}").raise_for_status())
                for i in range(gets)
            ]
    finally:
        scancel_all()
        subprocess.run(["scontrol", "update", "PartitionName=team-b", "State=UP"], check=True)
    return {"jobs_in_db": len(ids), "jobs_tracked": tracked} | summary(latencies)


# --- 3. sweeps -------------------------------------------------------------------------------------------------


def bench_sweep(root: Path, n: int) -> dict[str, Any]:
    spec = JobSpec(
        partition="team-a", command=("true",), folder=root / "sweep", extra_sbatch=("--hold",), time_limit_min=5
    )
    single = JobSpec(
        partition="team-a", command=("true",), folder=root / "single", extra_sbatch=("--hold",), time_limit_min=5
    )
    with counting_sbatch(root) as calls:
        sweep_s = timed(lambda: sweep(spec, ListSpace(points=[{"I": i} for i in range(n)]), max_parallel=10))
        sweep_sbatch = calls()
        scancel_all()
        singles_s = timed(lambda: [submit(single) for _ in range(n)])
        singles_sbatch = calls() - sweep_sbatch
    scancel_all()
    return {
        "tasks": n,
        "sweep_s": sweep_s,
        "sweep_sbatch_calls": sweep_sbatch,
        "singles_s": singles_s,
        "singles_sbatch_calls": singles_sbatch,
    }


@contextmanager
def counting_sbatch(root: Path) -> Iterator[Callable[[], int]]:
    """A wrapper first on PATH that logs each sbatch call before running the real one."""
    wrappers = root / "count-bin"
    wrappers.mkdir(exist_ok=True)
    log = root / "sbatch-calls.log"
    log.write_text("")
    real = shutil.which("sbatch")
    (wrappers / "sbatch").write_text(f'#!/bin/sh\necho call >> "{log}"\nexec {real} "$@"\n')
    (wrappers / "sbatch").chmod(0o755)
    previous = os.environ["PATH"]
    os.environ["PATH"] = f"{wrappers}:{previous}"
    try:
        yield lambda: len(log.read_text().split())
    finally:
        os.environ["PATH"] = previous


# --- 4. time to running ----------------------------------------------------------------------------------------


def bench_time_to_running(root: Path, base: str, digest: str, repeats: int) -> dict[str, Any]:
    from examples.smoke import submit_allreduce

    raw, gw = [], []
    for i in range(repeats):
        workdir = root / f"raw{i}"
        started = time.time()
        job_id, _ = submit_allreduce(workdir, partition="team-a")
        raw.append(_wait_marker(JobMarkers(workdir, job_id)) - started)
        _wait_idle()
        with httpx.Client(headers=TOKEN) as client:
            started = time.time()
            job = client.post(f"{base}/v1/jobs", json=request(digest, "allreduce", nodes=2, tasks_per_node=2)).json()
            while not (job := client.get(f"{base}/v1/jobs/{job['id']}").json())["slurm_job_id"]:
                time.sleep(0.02)
        folder = root / "jobs" / "team-a" / job["id"] / "job"
        gw.append(_wait_marker(JobMarkers(folder, job["slurm_job_id"])) - started)
        _wait_idle()
    return {
        "raw_sbatch_srun_s": statistics.median(raw),
        "gateway_s": statistics.median(gw),
        "raw_all": raw,
        "gateway_all": gw,
    }


def _wait_marker(markers: JobMarkers, timeout_s: float = 120) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        started = markers.started()
        if started:
            return float(started["time"])
        time.sleep(0.02)
    raise TimeoutError(f"no start marker in {markers.directory}")


def _wait_idle() -> None:
    for _ in range(600):
        if not subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.strip():
            return
        time.sleep(0.2)


# --- report ----------------------------------------------------------------------------------------------------


def table(results: dict[str, Any]) -> str:
    s, t, g, sw, r = (results[k] for k in ("submission", "tracking", "get", "sweep", "time_to_running"))
    ratio = s["post_1_client"]["p50_ms"] / s["raw_sbatch"]["p50_ms"]
    rows = [
        (
            "submit p50: raw sbatch / launchers.submit / POST 1 client / POST 16 clients (ms)",
            f"{s['raw_sbatch']['p50_ms']:.1f} / {s['launchers_submit']['p50_ms']:.1f} / "
            f"{s['post_1_client']['p50_ms']:.1f} / {s['post_16_clients']['p50_ms']:.1f}",
            "",
        ),
        (
            "submit p95 (same order, ms)",
            f"{s['raw_sbatch']['p95_ms']:.1f} / {s['launchers_submit']['p95_ms']:.1f} / "
            f"{s['post_1_client']['p95_ms']:.1f} / {s['post_16_clients']['p95_ms']:.1f}",
            "",
        ),
        (
            "submit throughput (jobs/s, same order)",
            f"{s['raw_sbatch']['per_s']:.0f} / {s['launchers_submit']['per_s']:.0f} / "
            f"{s['post_1_client']['per_s']:.0f} / {s['post_16_clients']['per_s']:.0f}",
            "",
        ),
        ("gateway POST p50 / raw sbatch p50", f"{ratio:.2f}x", _mark(ratio <= 1.5, "<= 1.5x")),
    ]
    for count, figures in t.items():
        rows.append(
            (
                f"poll cycle with {count} active jobs: Slurm commands, CPU s, wall s",
                f"{figures['slurm_commands_per_cycle']}, {figures['cpu_s_per_cycle']:.3f}, "
                f"{figures['wall_s_per_cycle']:.3f}",
                _mark(figures["slurm_commands_per_cycle"] <= 2, "<= 2"),
            )
        )
    rows.append(
        (
            f"GET /v1/jobs/{{id}} with {g['jobs_tracked']} jobs tracked: p50 / p99 (ms)",
            f"{g['p50_ms']:.1f} / {g['p99_ms']:.1f}",
            _mark(g["p99_ms"] < 20, "p99 < 20 ms"),
        )
    )
    rows.append(
        (
            f"{sw['tasks']}-task sweep: time, sbatch calls (vs {sw['tasks']} single submits)",
            f"{sw['sweep_s']:.2f} s, {sw['sweep_sbatch_calls']} (vs {sw['singles_s']:.1f} s, "
            f"{sw['singles_sbatch_calls']})",
            _mark(sw["sweep_sbatch_calls"] <= 2 and sw["sweep_s"] < 3, "<= 2 sbatch, < 3 s"),
        )
    )
    rows.append(
        (
            "time to all ranks running: raw sbatch+srun / gateway (s, median)",
            f"{r['raw_sbatch_srun_s']:.2f} / {r['gateway_s']:.2f}",
            _mark(r["gateway_s"] <= r["raw_sbatch_srun_s"] + 1, "<= raw + 1 s"),
        )
    )
    width = max(len(row[0]) for row in rows)
    lines = [f"{'measure'.ljust(width)} | figure | target", f"{'-' * width}-|--------|-------"]
    lines += [f"{name.ljust(width)} | {value} | {target}" for name, value, target in rows]
    return "\n".join(lines)


def _mark(ok: bool, target: str) -> str:
    return f"met ({target})" if ok else f"MISSED ({target})"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench", description=__doc__)
    parser.add_argument("--repeats", type=int, default=60, help="submissions per method")
    parser.add_argument("--tracked", default="10,100,1000", help="active job counts for the tracking bench")
    parser.add_argument("--sweep-tasks", type=int, default=1000)
    parser.add_argument("--get-jobs", type=int, default=1000)
    args = parser.parse_args()

    use_local_cluster()
    root = Path(tempfile.mkdtemp(prefix="hpcgw-bench-"))
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "host": socket.gethostname()},
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    try:
        scancel_all()
        with gateway(root) as base:
            digest = register(base, root)
            results["time_to_running"] = bench_time_to_running(root, base, digest, repeats=5)
            results["submission"] = bench_submission(root, base, digest, args.repeats)
            results["get"] = bench_get(root, base, digest, args.get_jobs, gets=1000)
        results["tracking"] = bench_tracking(root, [int(c) for c in args.tracked.split(",")], cycles=5)
        scancel_all()
        results["sweep"] = bench_sweep(root, args.sweep_tasks)
    finally:
        scancel_all()
        shutil.rmtree(root, ignore_errors=True)
    out_dir = REPO / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{results['started'].replace(':', '')}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    print(f"\nraw figures: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
