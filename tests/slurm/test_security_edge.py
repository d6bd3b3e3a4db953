"""On Slurm, with real Unix users: the HTTP edge and the CLI (issue 29, hole 8's body limit and the smaller ones).

A caller with no token streams a 300 MiB chunked body at `hpcgw serve` (run as ``hpcgw``): a 413 comes at once and
the gateway's processes never hold the body. A dashboard session ends at log-out for whoever copied its cookie.
alice runs the `hpcgw` CLI with her token in HPCGW_TOKEN and in a token file: no command line on the machine
ever shows it (every user reads /proc/*/cmdline). And the folders above the project's Python (/root) let the
teams' users and the gateway's through, and no one else.
"""

from __future__ import annotations

import os
import pwd
import re
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.support import HPCGW
from devcluster.spec import ClusterSpec
from tests.gateway.support import MiB, send_chunked
from tests.slurm.tenants import TOKENS, Gateway, gateway_memory_kib, run_gateway

pytestmark = [pytest.mark.slurm, pytest.mark.security]

PEAK_GROWTH_LIMIT_KB = 64 * 1024  # the body buffered anywhere would be 300 MiB


@pytest.fixture
def gw(cluster: ClusterSpec, tmp_path: Path) -> Iterator[Gateway]:
    with run_gateway(tmp_path) as gateway:
        yield gateway


def test_an_unauthenticated_chunked_body_is_refused_at_the_limit(gw: Gateway) -> None:
    port = int(gw.base.rsplit(":", 1)[1])
    before = gateway_memory_kib("VmHWM")
    head = "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    answer, sent, seconds = send_chunked(port, 300 * MiB, head=head)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    assert sent < 64 * MiB and seconds < 10, (sent, seconds)
    started = time.monotonic()
    assert httpx.get(f"{gw.base}/healthz", timeout=5).status_code == 200
    assert time.monotonic() - started < 1.0
    assert gateway_memory_kib("VmHWM") - before < PEAK_GROWTH_LIMIT_KB, (before, gateway_memory_kib("VmHWM"))


def test_a_dashboard_session_ends_at_log_out_for_a_copied_cookie(gw: Gateway) -> None:
    login = httpx.post(
        f"{gw.base}/ui/login", data={"token": TOKENS["alice"], "next": "/ui"}, follow_redirects=False, timeout=30
    )
    assert login.status_code == 303, login.text
    cookie = login.cookies["hpcgw_ui"]
    assert TOKENS["alice"] not in cookie
    cookies = {"hpcgw_ui": cookie}
    page = httpx.get(f"{gw.base}/ui/teams/team-a", cookies=cookies, follow_redirects=False, timeout=30)
    assert page.status_code == 200 and "team-a" in page.text
    form_token = re.search(r'name="form_token" value="([0-9a-f]+)"', page.text)
    assert form_token is not None
    out = httpx.post(
        f"{gw.base}/ui/logout", data={"form_token": form_token.group(1)}, cookies=cookies, follow_redirects=False
    )
    assert out.status_code == 303
    again = httpx.get(f"{gw.base}/ui/teams/team-a", cookies=cookies, follow_redirects=False, timeout=30)
    assert again.status_code == 303 and again.headers["location"].startswith("/ui/login")


def _command_lines_meanwhile(stop: threading.Event, seen: list[bytes]) -> None:
    while not stop.is_set():
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    seen.append(Path(entry.path, "cmdline").read_bytes())
                except OSError:
                    pass
        time.sleep(0.005)


def test_no_command_line_shows_the_token_during_a_cli_call(gw: Gateway, tmp_path: Path) -> None:
    token_file = tmp_path / "alice-token"
    token_file.write_text(TOKENS["alice"] + "\n")
    token_file.chmod(0o600)
    os.chown(token_file, pwd.getpwnam("alice").pw_uid, -1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPCGW_")} | {"HPCGW_URL": gw.base}
    calls = {
        "environment": (["runuser", "-u", "alice", "--", HPCGW, "jobs"], env | {"HPCGW_TOKEN": TOKENS["alice"]}),
        "file": (["runuser", "-u", "alice", "--", HPCGW, "jobs", "--token-file", str(token_file)], env),
    }
    for how, (argv, call_env) in calls.items():
        seen: list[bytes] = []
        stop = threading.Event()
        watcher = threading.Thread(target=_command_lines_meanwhile, args=(stop, seen), daemon=True)
        watcher.start()
        try:
            done = subprocess.run(argv, env=call_env, capture_output=True, text=True, timeout=60, cwd="/tmp")
        finally:
            stop.set()
            watcher.join()
        assert done.returncode == 0, (how, done.stdout, done.stderr)
        assert any(b"python" in line and b"hpcgw\x00jobs" in line for line in seen), how  # the CLI was seen
        assert not any(TOKENS["alice"].encode() in line for line in seen), how
    refused = subprocess.run(
        ["runuser", "-u", "alice", "--", HPCGW, "jobs", "--token", "not-a-real-token"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/tmp",
    )
    assert refused.returncode == 2 and "HPCGW_TOKEN" in refused.stdout + refused.stderr


def test_only_the_teams_and_the_gateway_may_traverse_root_to_the_python() -> None:
    """`hpcgw cluster users` (what `make cluster-up` runs) lets the jobs' users reach the project's Python under
    /root, and no one else: nobody, in no team's group, cannot even enter /root."""
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [HPCGW, "cluster", "users", "--config", str(repo / "config" / "example.toml")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    python = Path(sys.executable).resolve()
    private = [p for p in python.parents if stat.S_IMODE(p.stat().st_mode) & 0o005 != 0o005]
    assert private, "no private folder above the Python: nothing to check"
    for folder in private:
        assert stat.S_IMODE(folder.stat().st_mode) & 0o007 == 0, folder  # others: nothing, not even o+x
    for user in ("alice", "dave", "bob", "carol", "admin", "hpcgw"):
        ran = subprocess.run(["runuser", "-u", user, "--", str(python), "-c", "print('ok')"], capture_output=True)
        assert ran.stdout == b"ok\n", (user, ran.stderr)
    outsider = subprocess.run(["runuser", "-u", "nobody", "--", "test", "-x", str(python)], check=False)
    assert outsider.returncode != 0
