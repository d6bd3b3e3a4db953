"""The benchmarks' shared pieces: statistics, a gateway on the local cluster, request bodies, waits; and what the
tests share with them: the gateway's configuration (:func:`gateway_settings`, :func:`toml_text`), the development
users' tokens and the ``hpcgw`` command. Nothing here imports pytest."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import tomli_w
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from devcluster.users import as_gateway, hand_over
from examples.intent_classifier import ensure_dataset
from gateway.client import wait_healthy
from gateway.store.models import Job
from launchers.runtime.markers import JobMarkers
from launchers.slurm.ids import master_id
from launchers.slurm.times import parse_timestamp

# --- the gateway's configuration, for the tests and the benches ------------------------------------------------

HPCGW = str(Path(sys.executable).with_name("hpcgw"))  # the gateway's command line, installed beside this Python

# The development users of config/example.toml: each one's team (or role) and development token.
DEV_USERS: dict[str, dict[str, str]] = {
    "alice": {"team": "team-a", "token": "team-a-dev-token"},
    "dave": {"team": "team-a", "token": "team-a-dave-dev-token"},
    "bob": {"team": "team-b", "token": "team-b-dev-token"},
    "carol": {"team": "team-c", "token": "team-c-dev-token"},
    "admin": {"role": "admin", "token": "admin-dev-token"},
}


def bearer(user: str) -> dict[str, str]:
    """The Authorization header of ``user``'s development token."""
    return {"Authorization": f"Bearer {DEV_USERS[user]['token']}"}


TOKEN = bearer("alice")
TEAM_B = bearer("bob")
ADMIN = bearer("admin")


def team(name: str, **limits: Any) -> dict[str, Any]:
    """A team's table: the partition and the Slurm account of its own name, and ``limits`` (max_nodes, ...)."""
    return {"partitions": [name], "account": name, **limits}


def gateway_settings(
    root: Path,
    *,
    teams: Mapping[str, Mapping[str, Any]] | None = None,
    users: Sequence[str] = ("alice", "bob", "admin"),
    **overrides: Any,
) -> dict[str, Any]:
    """The gateway's configuration for a test or a bench, as the dict its TOML file reads as
    (``GatewayConfig.model_validate`` takes it, :func:`toml_text` writes it): development mode; its SQLite
    database, datasets and job folders under ``root``; container runtime 'none', the trainers run from their
    ``local_command``; ``teams`` (default: team-a, 2 nodes, 2 running and 5 queued jobs; team-b, 2 nodes, 1
    running job); the development tokens of ``users`` (:data:`DEV_USERS`). ``overrides`` replace top-level keys:
    database_url, container_runtime, image_roots, poll, rate_limits, functions, tokens, ..."""
    if teams is None:
        teams = {
            "team-a": team("team-a", max_nodes=2, max_running_jobs=2, max_queued_jobs=5),
            "team-b": team("team-b", max_nodes=2, max_running_jobs=1),
        }
    settings: dict[str, Any] = {
        "dev_mode": True,
        "database_url": f"sqlite:///{root}/gw.db",
        "dataset_root": str(root / "datasets"),
        "job_root": str(root / "jobs"),
        "container_runtime": "none",
        "algorithms": {"local_commands": True},
        "teams": {name: dict(table) for name, table in teams.items()},  # copies: a caller may complete them
        "tokens": [{"user": user, **DEV_USERS[user]} for user in users],
    }
    return settings | overrides


def toml_text(settings: Mapping[str, Any]) -> str:
    """``settings`` as the TOML file ``hpcgw serve`` reads (a test that needs more tokens or teams adds them to
    ``settings`` first: tomli_w writes a list of tables inline, so nothing can be appended to the text)."""
    return tomli_w.dumps(_plain(settings))


def _plain(value: Any) -> Any:
    """Paths as strings and tuples as lists: what TOML can hold."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return str(value) if isinstance(value, Path) else value


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
    """Every job on the development cluster, whoever's (the gateway's jobs run as alice and bob)."""
    out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()
    ids = sorted({master_id(i) for i in out})  # a pending range (12_[3-9%2]) is cancelled by its array's id
    if ids:
        subprocess.run(["scancel", *ids], check=False)
    for _ in range(120):
        if not subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.strip():
            return
        time.sleep(0.5)


# --- the gateway under test ------------------------------------------------------------------------------------

# Far above any case's rate: the benches measure the gateway's cost, not its rate limits.
ROOMY_RATE_LIMITS = {
    "per_token": {"per_min": 1000000, "burst": 100000},
    "per_team": {"per_min": 1000000, "burst": 100000},
}


def both_teams(max_running_jobs: int = 2000, max_queued_jobs: int = 5000) -> dict[str, dict[str, Any]]:
    """team-a and team-b, each with 2 nodes, ``max_running_jobs`` and ``max_queued_jobs``."""
    limits = {"max_nodes": 2, "max_running_jobs": max_running_jobs, "max_queued_jobs": max_queued_jobs}
    return {name: team(name, **limits) for name in ("team-a", "team-b")}


@contextmanager
def gateway(
    root: Path,
    teams: Mapping[str, Mapping[str, Any]] | None = None,
    rate_limits: Mapping[str, Any] = ROOMY_RATE_LIMITS,
    *,
    api_processes: int = 1,
    database_url: str | None = None,
    with_worker: bool = True,
) -> Iterator[str]:
    """``hpcgw serve`` as the gateway's own user, configured by :func:`gateway_settings` with ``teams`` (default:
    :func:`both_teams`), ``rate_limits``, a 2 s poll and its database (default: SQLite in ``root``)."""
    settings = gateway_settings(
        root,
        teams=both_teams() if teams is None else teams,
        database_url=database_url or f"sqlite:///{root}/bench.db",
        poll={"interval_s": 2.0, "floor_s": 0.2},
        rate_limits=rate_limits,
    )
    (root / "gateway.toml").write_text(toml_text(settings))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(root / "gateway.log", "ab")
    hand_over(root, root / "gateway.toml")  # the gateway runs as its own user, never root
    proc = subprocess.Popen(
        [
            HPCGW,
            "serve",
            "--config",
            str(root / "gateway.toml"),
            "--port",
            str(port),
            "--processes",
            str(api_processes),
            "--with-worker" if with_worker else "--no-worker",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        **as_gateway(),
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


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


@contextmanager
def counting_sbatch(root: Path) -> Iterator[Callable[[], int]]:
    """A wrapper first on PATH that logs each sbatch call before running the real one."""
    wrappers = root / "count-bin"
    wrappers.mkdir(exist_ok=True)
    log = root / "sbatch-calls.log"
    log.write_text("")
    real = shutil.which("sbatch")
    (wrappers / "sbatch").write_text(f'#!/bin/sh\necho call >> "{log}"\nexec {real} "$@"\n')
    # The gateway's sbatch goes through sudo, whose secure_path skips this folder: count it there.
    sudo = shutil.which("sudo")
    counted = f'case " $* " in *" sbatch "*) echo call >> "{log}";; esac\n'
    (wrappers / "sudo").write_text(f'#!/bin/sh\n{counted}exec {sudo} "$@"\n')
    for wrapper in ("sbatch", "sudo"):
        (wrappers / wrapper).chmod(0o755)
    previous = os.environ["PATH"]
    os.environ["PATH"] = f"{wrappers}:{previous}"
    try:
        yield lambda: len(log.read_text().split())
    finally:
        os.environ["PATH"] = previous


# --- 4. time to running ----------------------------------------------------------------------------------------


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


def slurm_copies(engine: Engine, ids: set[str], since: datetime, timeout_s: float = 180) -> Counter[str]:
    """How many Slurm jobs each gateway job became, once accounting has heard of all of them, counted from sacct
    by comment: a job's own (``hpcgw:<id>``), or its coalesced array's (``hpcgw:batch:<b>``) at element ``i``,
    which the database maps back to the job it holds at (b, i). An array element submitted since ``since`` that
    no job claims (a batch sent twice: its jobs were sent again in another) counts under ``?<b>_<i>``. Jobs
    submitted before ``since`` do not count, though ``sacct -S`` lists those that still ran then."""
    with Session(engine) as session:
        rows = session.exec(select(Job.id, Job.batch_id, Job.batch_index).where(col(Job.batch_id).is_not(None)))
        element_of = {(b, i): job_id for job_id, b, i in rows}
    start = since.astimezone().strftime("%Y-%m-%dT%H:%M:%S")  # sacct reads local time
    deadline = time.monotonic() + timeout_s
    while True:
        out = subprocess.run(
            ["sacct", "-X", "-n", "-P", "-a", "-S", start, "-o", "JobID,Comment,Submit"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        seen: Counter[str] = Counter()
        for line in out.splitlines():
            slurm_id, comment, submitted = [*line.split("|"), "", ""][:3]
            at = parse_timestamp(submitted)
            if at is not None and at < since.replace(microsecond=0):
                continue  # -S also lists jobs still running then: an earlier run's, not this one's
            if comment.startswith("hpcgw:batch:"):
                batch, index = comment.removeprefix("hpcgw:batch:"), slurm_id.partition("_")[2]
                if index.isdigit():
                    seen[element_of.get((batch, int(index)), f"?{batch}_{index}")] += 1
            elif comment.removeprefix("hpcgw:") in ids:
                seen[comment.removeprefix("hpcgw:")] += 1
        if ids <= set(seen) or time.monotonic() > deadline:
            return seen
        time.sleep(1)
