"""On Slurm, with real Unix users: a generated corpus of hostile job files harms only the job they belong to.

alice's job runs; through her own account she fills its folders with what no trainer writes: start markers of
every wrong type, metrics lines with a 5,000-digit number, 100,000 nested brackets, invalid UTF-8, NaN, lines of
megabytes, a sparse file of gigabytes, FIFOs, links to /dev/zero, to the gateway's configuration and to bob's
files, a link in place of her markers folder, heartbeats of the same kinds, changed every poll interval. Meanwhile
bob's and carol's jobs run and end: each must be tracked to `succeeded` (sacct agreeing), /healthz must answer
within a second throughout, and the gateway's memory must stay bounded. alice's job ends with a state or with a
tracking error the API shows (issue 29, hole 3: one such file used to fail every cycle, for every team).
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from tests.slurm.tenants import Gateway, as_user, auth, gateway_memory_kib, run_gateway

pytestmark = [pytest.mark.slurm, pytest.mark.security]

RSS_GROWTH_LIMIT_KIB = 200 * 1024
HEALTHZ_LIMIT_S = 1.0
ALICE_RUN_S = 100  # long enough for the corpus to be written, changed, and for bob's and carol's jobs to end
OTHERS_RUN_S = 5
BOB_SECRET = "bob-metric-that-only-bob-may-see"
TERMINAL = {"succeeded", "failed", "cancelled", "timeout", "hung", "diverged", "stopped_early"}

# Run by alice's own python3: writes one variant of the corpus into her job's folders, named by argv.
CORPUS = r"""
import json, os, sys, time
kind, job_dir, submit_dir, slurm_id, bob_metrics, bob_markers = sys.argv[1:7]
markers = os.path.join(submit_dir, "markers")
started = os.path.join(markers, slurm_id + ".started")
metrics = os.path.join(job_dir, "metrics.jsonl")
beat = os.path.join(markers, slurm_id + ".0.hb.0")
config = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(job_dir))), "gw.toml")

def replace(path, data=None, link=None, fifo=False, size=None):
    tmp = path + ".corpus"
    for p in (tmp,):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass
    if link is not None:
        os.symlink(link, tmp)
    elif fifo:
        os.mkfifo(tmp)
    else:
        with open(tmp, "wb") as f:
            if size is not None:
                f.truncate(size)
            else:
                f.write(data)
    os.replace(tmp, path)

deep = b"[" * 100000 + b"]" * 100000
values = {
    "started-good": (started, dict(data=json.dumps({"size": 1, "restart": 0, "time": time.time()}).encode())),
    "started-text": (started, dict(data=b'{"size": 1, "restart": "x"}')),
    "started-list": (started, dict(data=b'{"size": [1], "restart": [0]}')),
    "started-bool": (started, dict(data=b'{"size": true, "restart": true, "time": "now"}')),
    "started-huge": (started, dict(data=b'{"size": 1, "restart": ' + b"9" * 5000 + b"}")),
    "started-deep": (started, dict(data=deep)),
    "started-array": (started, dict(data=b"[0, 1]")),
    "started-utf8": (started, dict(data=b'{"size": 1, "restart": 0, "time": "\xff\xfe\x00"}')),
    "started-fifo": (started, dict(fifo=True)),
    "started-zero": (started, dict(link="/dev/zero")),
    "started-big": (started, dict(size=1 << 30)),
    "metrics-huge": (metrics, dict(data=b'{"epoch": 1, "loss": ' + b"9" * 5000 + b"}\n" * 50)),
    "metrics-deep": (metrics, dict(data=b'{"epoch": ' + deep + b"}\n")),
    "metrics-nan": (metrics, dict(data=b'{"epoch": 1, "loss": NaN, "acc": -Infinity, "x": 1e999}\n')),
    "metrics-utf8": (metrics, dict(data=b'{"epoch": 1, "tag": "\xff\xfe\xed", "nul": "\\u0000\\ud800"}\n')),
    "metrics-long": (metrics, dict(data=b'{"epoch": 1, "pad": "' + b"a" * (8 << 20) + b'"}\n')),
    "metrics-many": (metrics, dict(data=b''.join(b'{"epoch": %d, "loss": 0.5}\n' % i for i in range(300000)))),
    "metrics-sparse": (metrics, dict(size=4 << 30)),
    "metrics-fifo": (metrics, dict(fifo=True)),
    "metrics-zero": (metrics, dict(link="/dev/zero")),
    "metrics-urandom": (metrics, dict(link="/dev/urandom")),
    "metrics-bob": (metrics, dict(link=bob_metrics)),
    "metrics-config": (metrics, dict(link=config)),
    "beat-deep": (beat, dict(data=deep)),
    "beat-fifo": (beat, dict(fifo=True)),
    "beat-zero": (beat, dict(link="/dev/zero")),
}
if kind == "markers-link":  # a link in place of a folder on the way to the markers
    os.rename(markers, markers + ".real")
    os.symlink(bob_markers, markers)
elif kind == "markers-back":
    if os.path.islink(markers):
        os.unlink(markers)
        os.rename(markers + ".real", markers)
else:
    path, how = values[kind]
    replace(path, **how)
"""
READ_WHILE_RUNNING = [
    "metrics-huge", "beat-deep", "metrics-deep", "beat-fifo", "metrics-nan", "beat-zero", "metrics-utf8",
    "metrics-long", "metrics-many", "metrics-sparse", "metrics-fifo", "metrics-zero", "metrics-urandom",
    "metrics-bob",
]  # fmt: skip
STARTED = [
    "started-text", "started-list", "started-bool", "started-huge", "started-deep", "started-array",
    "started-utf8", "started-fifo", "started-zero", "started-big",
]  # fmt: skip
# A valid start marker (alice may write one) before each file the worker reads only while the job is running.
KINDS = [k for kind in READ_WHILE_RUNNING for k in ("started-good", kind)] + STARTED + [
    "started-good", "markers-link", "metrics-config", "markers-back", "started-good",
]  # fmt: skip


@pytest.fixture
def gw(cluster: object, tmp_path: Path) -> Iterator[Gateway]:
    with run_gateway(tmp_path) as gateway:
        yield gateway


class Watch:
    """/healthz asked every 0.2 s (the slowest answer, a failure counting as 30 s) and the gateway's memory."""

    def __init__(self, gw: Gateway) -> None:
        self.gw, self.slowest, self.peak_kib = gw, 0.0, 0
        self.base_kib = gateway_memory_kib()
        self.answers: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                answer = httpx.get(f"{self.gw.base}/healthz", timeout=5)
                answer.raise_for_status()
                self.answers.append(answer.json())
                self.slowest = max(self.slowest, time.monotonic() - started)
            except httpx.HTTPError:
                self.slowest = 30.0
            self.peak_kib = max(self.peak_kib, gateway_memory_kib())
            time.sleep(0.2)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def sleeper(gw: Gateway, user: str, team: str, seconds: int, metric: str = "", **fields: Any) -> dict[str, Any]:
    """A job of ``user`` whose trainer writes one epoch, sleeps, and ends well."""
    line = json.dumps({"epoch": 1, "loss": 0.5, "tag": metric})
    code = f"import os, time\nopen(os.environ['METRICS_FILE'], 'a').write({line!r} + '\\n')\ntime.sleep({seconds})\n"
    gw.algorithm(f"sleep-{user}", team, code)
    return gw.job(user, f"sleep-{user}", **fields)


def wait_state(gw: Gateway, job_id: str, user: str, states: set[str], timeout_s: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while (job := gw.get(f"/v1/jobs/{job_id}", user))["state"] not in states:
        assert time.monotonic() < deadline, job
        time.sleep(0.3)
    return cast(dict[str, Any], job)


def sacct_state(slurm_id: str) -> str:
    out = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-o", "State", "-j", slurm_id], capture_output=True, text=True, check=False
    )
    return out.stdout.strip().splitlines()[0].split()[0] if out.stdout.strip() else ""


def write_corpus(kind: str, gw: Gateway, alice: dict[str, Any], bob: dict[str, Any]) -> None:
    job_dir = gw.root / "jobs" / "team-a" / alice["id"]
    bob_dir = gw.root / "jobs" / "team-b" / bob["id"]
    argv = [
        "/usr/bin/python3", "-c", CORPUS, kind, str(job_dir), str(job_dir / "job"), alice["slurm_job_id"],
        str(bob_dir / "metrics.jsonl"), str(bob_dir / "job" / "markers"),
    ]  # fmt: skip
    done = as_user("alice", argv, timeout=120)
    assert done.returncode == 0, (kind, done.stderr[-2000:])


def test_a_hostile_corpus_in_one_job_harms_no_other_job(gw: Gateway) -> None:
    # heartbeats read (a hang timeout), and a NaN loss of the corpus no reason to stop it early
    alice = sleeper(gw, "alice", "team-a", ALICE_RUN_S, health={"stop_on_nan": False, "hang_timeout_s": 600})
    alice = wait_state(gw, alice["id"], "alice", {"launching", "running"} | TERMINAL)
    assert alice["state"] in ("launching", "running"), alice
    bob = sleeper(gw, "bob", "team-b", OTHERS_RUN_S, metric=BOB_SECRET)
    bob = wait_state(gw, bob["id"], "bob", {"launching", "running"} | TERMINAL)  # its folder exists now
    with Watch(gw) as watch:
        carol = sleeper(gw, "carol", "team-c", OTHERS_RUN_S)
        for kind in KINDS:
            write_corpus(kind, gw, alice, bob)
            time.sleep(1.2)  # a poll interval: each variant is seen by at least one cycle
        done = {user: wait_state(gw, job["id"], user, TERMINAL) for user, job in (("bob", bob), ("carol", carol))}
        health = httpx.get(f"{gw.base}/healthz", timeout=5).json()
        ended = wait_state(gw, alice["id"], "alice", TERMINAL, timeout_s=ALICE_RUN_S + 240)
    for user, job in done.items():
        assert job["state"] == "succeeded", (user, job)
        assert sacct_state(job["slurm_job_id"]) == "COMPLETED", (user, job)
    assert ended["state"] in TERMINAL or ended.get("tracking_error"), ended
    assert BOB_SECRET not in json.dumps(gw.get(f"/v1/jobs/{alice['id']}/metrics", "alice"))  # no link followed
    assert watch.slowest < HEALTHZ_LIMIT_S, watch.slowest
    assert watch.peak_kib - watch.base_kib < RSS_GROWTH_LIMIT_KIB, (watch.base_kib, watch.peak_kib)
    assert all(a["cycle_failures"] == 0 for a in watch.answers), health  # no whole cycle failed
    for answer in watch.answers:  # anyone's /healthz names no job, team or path
        assert not {"failing_jobs", "last_error", "last_cycle_error", "worker"} & set(answer)
    assert "team-a" not in json.dumps(watch.answers) and alice["id"] not in json.dumps(watch.answers)
    metrics = gw.request("GET", "/metrics", "admin")
    assert metrics.status_code == 200 and "hpcgw_tracking_failures" in metrics.text
    assert gw.request("GET", "/metrics").status_code == 401
    detailed = httpx.get(f"{gw.base}/healthz", headers=auth("admin"), timeout=5).json()
    assert "failing_jobs" in detailed
