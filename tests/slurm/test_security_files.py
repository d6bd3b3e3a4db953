"""On Slurm, with real Unix users: what the gateway serves of a job's own files when the job's user replaces them.

alice's job finishes; then alice, through her own account, replaces her rank log with a symlink to the gateway's
configuration (every token in clear), its database, bob's log, or the gateway's /proc/self/environ, tries to swap
a folder above it, and replaces it with a FIFO or a link to /dev/zero. The API's /logs and the dashboard's job
page must serve no byte of any of them, and the gateway must keep answering (/healthz within a second) with its
memory bounded, however many requests hit the planted file at once (the hole of issue 29: the log tail followed
links, blocked a pool thread per request on a FIFO, and read /dev/zero without end).
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from devcluster.spec import ClusterSpec
from tests.slurm.tenants import TOKENS, Gateway, as_user, gateway_memory_kib, run_gateway

pytestmark = [pytest.mark.slurm, pytest.mark.security]

ALICE_LINE = "alice-own-line"
BOB_LINE = "BOB-SECRET-LOG-LINE"
FOREIGN = ("admin-dev-token", "team-b-dev-token", "SQLite format", BOB_LINE, "PATH=", "HOME=")
CONCURRENT = 48  # more than the API's thread pool (40): one blocked thread per request would stop every endpoint
TERMINAL = {"succeeded", "failed", "cancelled"}


@pytest.fixture
def gw(cluster: ClusterSpec, tmp_path: Path) -> Iterator[Gateway]:
    with run_gateway(tmp_path) as gateway:
        yield gateway


def finished_log(gw: Gateway, user: str, team: str, line: str) -> tuple[dict[str, Any], Path]:
    """A job of ``user``'s that printed ``line`` and succeeded, and its rank 0 log."""
    gw.algorithm(f"talk-{user}", team, f"print({line!r}, flush=True)")
    job = gw.wait(gw.job(user, f"talk-{user}")["id"], user)
    assert job["state"] == "succeeded", job
    log = gw.root / "jobs" / team / job["id"] / "job" / f"{job['slurm_job_id']}_0_log.out"
    assert line in log.read_text()
    return job, log


def plant(user: str, log: Path, *command: str) -> None:
    """As ``user``: remove ``log`` and put ``command``'s result in its place (``command`` ends with the path)."""
    done = as_user(user, ["rm", "-f", str(log)])
    assert done.returncode == 0, done.stderr
    done = as_user(user, [*command, str(log)])
    assert done.returncode == 0, done.stderr


def logs_text(gw: Gateway, job_id: str, user: str = "alice") -> str:
    response = gw.request("GET", f"/v1/jobs/{job_id}/logs", user)
    assert response.status_code == 200, response.text
    return response.text


def dashboard_page(gw: Gateway, job_id: str, user: str = "alice") -> str:
    with httpx.Client(base_url=gw.base, timeout=30) as client:
        login = client.post("/ui/login", data={"token": TOKENS[user], "next": "/ui"}, follow_redirects=False)
        assert login.status_code == 303, login.text
        page = client.get(f"/ui/jobs/{job_id}")
        assert page.status_code == 200 and job_id in page.text, page.text[:500]
        return page.text


def assert_nothing_foreign(text: str, what: str) -> None:
    leaked = [secret for secret in FOREIGN if secret in text]
    assert not leaked, f"{what} served {leaked}"


def test_links_planted_by_the_jobs_user_serve_no_foreign_byte(gw: Gateway) -> None:
    _, bob_log = finished_log(gw, "bob", "team-b", BOB_LINE)
    job, log = finished_log(gw, "alice", "team-a", ALICE_LINE)
    assert ALICE_LINE in logs_text(gw, job["id"]) and ALICE_LINE in dashboard_page(gw, job["id"])
    targets = {
        "the gateway's configuration": gw.root / "gw.toml",
        "the gateway's database": gw.root / "gw.db",
        "bob's log": bob_log,
        "the gateway's environment": Path("/proc/self/environ"),
    }
    for what, target in targets.items():
        plant("alice", log, "ln", "-s", str(target))
        assert log.is_symlink() and os.readlink(log) == str(target)
        if what != "the gateway's environment":  # what a reader that follows the link would serve
            assert any(secret in target.read_text(errors="replace") for secret in FOREIGN), what
        assert_nothing_foreign(logs_text(gw, job["id"]), f"/logs through a link to {what}")
        assert_nothing_foreign(dashboard_page(gw, job["id"]), f"the job page through a link to {what}")
    # A folder above the log: alice may not swap the gateway's folders; if the system let her, the reader refuses.
    submit = log.parent
    moved = as_user("alice", ["mv", str(submit), str(submit.with_name("job.moved"))])
    if moved.returncode == 0:
        as_user("alice", ["ln", "-s", str(bob_log.parent), str(submit)])
    else:
        assert submit.is_dir() and not submit.is_symlink(), moved
    assert_nothing_foreign(logs_text(gw, job["id"]), "/logs through a swapped folder")
    assert_nothing_foreign(dashboard_page(gw, job["id"]), "the job page through a swapped folder")


def storm(gw: Gateway, job_id: str) -> tuple[list[int], float]:
    """CONCURRENT /logs requests at once while /healthz is asked every 0.2 s: their statuses, and the slowest
    /healthz answer (seconds, as curl measures it in its own process, apart from this one's busy threads; a
    failure counts as 30)."""
    slowest = 0.0
    stop = threading.Event()
    headers = f"Authorization: Bearer {TOKENS['admin']}"

    def probe() -> None:
        nonlocal slowest
        while not stop.is_set():
            done = subprocess.run(
                [
                    "curl",
                    "-sf",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{time_total}",
                    "-m",
                    "5",
                    "-H",
                    headers,
                    f"{gw.base}/healthz",
                ],
                capture_output=True,
                text=True,
            )
            slowest = max(slowest, float(done.stdout) if done.returncode == 0 else 30.0)
            time.sleep(0.2)

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    try:
        with ThreadPoolExecutor(CONCURRENT) as pool:
            statuses = list(pool.map(lambda _: _status(gw, f"/v1/jobs/{job_id}/logs?lines=1000"), range(CONCURRENT)))
        time.sleep(1.0)  # /healthz once more after the storm
    finally:
        stop.set()
        prober.join(10)
    return statuses, slowest


def _status(gw: Gateway, path: str) -> int:
    try:
        return gw.request("GET", path, "alice").status_code
    except httpx.HTTPError:
        return 0  # timed out: the request blocked


def test_a_fifo_or_dev_zero_as_the_log_keeps_the_gateway_answering(gw: Gateway) -> None:
    job, log = finished_log(gw, "alice", "team-a", ALICE_LINE)
    before = gateway_memory_kib()
    for what, command in (("a FIFO", ["mkfifo"]), ("a link to /dev/zero", ["ln", "-s", "/dev/zero"])):
        plant("alice", log, *command)
        started = time.monotonic()
        statuses, slowest = storm(gw, job["id"])
        assert statuses == [200] * CONCURRENT, (what, statuses)
        assert slowest < 1.0, f"/healthz took {slowest:.1f} s while the log was {what}"
        assert time.monotonic() - started < 30, what
        assert_nothing_foreign(logs_text(gw, job["id"]), f"/logs of {what}")
        assert '"lines":[]' in logs_text(gw, job["id"]), what
        grown = gateway_memory_kib() - before
        assert grown < 200 * 1024, f"the gateway grew by {grown // 1024} MiB while the log was {what}"
    assert gw.request("GET", "/healthz").status_code == 200


HOSTILE = r"""
import json, os, time
from pathlib import Path
progress = Path(os.environ["HPCGW_PROGRESS_FILE"])
markers, job = progress.parent, progress.name.split(".")[0]
with open(os.environ["METRICS_FILE"], "wb") as f:
    f.write(b'{"epoch": 1, "loss": 0.5}\n')
    f.write(b'{"epoch": 2, "loss": ' + b"9" * 5000 + b"}\n")
    f.write(b"[" * 100000 + b"\n")
    f.write(b'{"epoch": 3, "loss": 1e999, "s": "\\u0000\\ud800", "b": "\xff"}\n')
(markers / f"{job}.started").write_text('{"restart": "x", "size": [1]}')
os.mkfifo(markers / f"{job}.0.exit.7")
os.symlink("/etc/shadow", markers / f"{job}.0.exit.8")
os.symlink("/dev/zero", markers / f"{job}.0.hb.0.x")
time.sleep(8)
print("hostile done", flush=True)
"""


def test_a_jobs_hostile_files_harm_only_that_job(gw: Gateway) -> None:
    """alice's trainer writes a corpus of hostile files in its own folder while bob's job runs: bob's job is tracked
    to its end, /healthz answers within a second throughout, the gateway's memory stays bounded, and alice's job
    ends with its good epochs kept."""
    gw.algorithm("hostile", "team-a", HOSTILE)
    gw.algorithm("steady", "team-b", f"import time; time.sleep(4); print({BOB_LINE!r})")
    before = gateway_memory_kib()
    alice = gw.job("alice", "hostile")
    bob = gw.job("bob", "steady")
    deadline, slowest = time.monotonic() + 180, 0.0
    while {gw.get(f"/v1/jobs/{j['id']}", "admin")["state"] for j in (alice, bob)} - TERMINAL:
        assert time.monotonic() < deadline, "the jobs did not end"
        started = time.monotonic()
        assert gw.request("GET", "/healthz", "admin").status_code == 200
        slowest = max(slowest, time.monotonic() - started)
        time.sleep(0.5)
    assert slowest < 1.0, f"/healthz took {slowest:.1f} s"
    assert gw.get(f"/v1/jobs/{bob['id']}", "bob")["state"] == "succeeded"
    job = gw.get(f"/v1/jobs/{alice['id']}", "alice")
    assert job["state"] in TERMINAL and not job.get("tracking_error"), job
    epochs = gw.get(f"/v1/jobs/{alice['id']}/metrics", "alice")["epochs"]
    assert [e.get("epoch") for e in epochs] == [1, 2, 3], epochs
    assert gw.request("GET", "/healthz", "admin").json()["status"] == "ok"
    grown = gateway_memory_kib() - before
    assert grown < 200 * 1024, f"the gateway grew by {grown // 1024} MiB"
