"""On Slurm: the real `hpcgw` in a real terminal (tmux at 80 x 24 and 120 x 40) against `hpcgw serve` on the
local cluster, as a new user meets it; and the same commands piped, as scripts and CI logs meet them."""

from __future__ import annotations

import itertools
import os
import re
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.support import HPCGW
from tests.slurm.cli_support import ALGORITHMS, DATA, Gateway, gw, hpcgw  # noqa: F401  (gw: the fixture)

pytestmark = pytest.mark.slurm
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
SUBMIT = ["submit", "--algorithm", "sleep", *DATA, "--param", "S=4", "-J", "tty"]
assert ALGORITHMS  # the served gateway registers `sleep`


class Terminal:
    """One tmux session of a given size, running a login shell's worth of environment for `hpcgw`."""

    def __init__(self, gateway: Gateway, columns: int, rows: int) -> None:
        self.name = f"hpcgw-{uuid.uuid4().hex[:8]}"
        env = {
            "HPCGW_URL": gateway.url,
            "HPCGW_TOKEN": "team-a-dev-token",
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            "TERM": "xterm-256color",
            "PS1": "$ ",
        }
        # Through env(1), not tmux's -e: tmux gives a new session the PATH of the client that starts it.
        shell = " ".join(["env", *(shlex.quote(f"{k}={v}") for k, v in env.items()), "bash", "--norc", "--noprofile"])
        argv = ["tmux", "new-session", "-d", "-s", self.name, "-x", str(columns), "-y", str(rows), shell]
        subprocess.run(argv, check=True, timeout=30)
        subprocess.run(["tmux", "set-option", "-t", self.name, "history-limit", "5000"], check=True, timeout=30)

    def run(self, command: str, timeout_s: float = 180) -> str:
        """Type ``command``, wait for it to end, and return the pane (scrollback included), wrapped lines joined
        back (-J) so that a line longer than the terminal shows as one."""
        marker = f"done-{uuid.uuid4().hex[:6]}"
        subprocess.run(["tmux", "send-keys", "-t", self.name, f"{command}; echo {marker}=$?", "Enter"], check=True)
        deadline = time.monotonic() + timeout_s
        while True:
            pane = self.capture()
            if re.search(rf"^{marker}=\d+", pane, re.M):
                return pane
            assert time.monotonic() < deadline, pane
            time.sleep(0.5)

    def capture(self) -> str:
        return subprocess.run(
            ["tmux", "capture-pane", "-p", "-J", "-S", "-", "-t", self.name],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], check=False, timeout=30)


@pytest.fixture(params=[(80, 24), (120, 40)], ids=["80x24", "120x40"])
def terminal(gw: Gateway, request: pytest.FixtureRequest) -> Iterator[Terminal]:
    term = Terminal(gw, *request.param)
    yield term
    term.close()


def test_submit_wait_is_one_table_changing_in_place(terminal: Terminal) -> None:
    pane = terminal.run(" ".join(["hpcgw", *SUBMIT, "--wait"]))
    assert pane.count("JOBID") == 1, pane  # one live table, redrawn in place, never scrolled
    assert "HTTP Request" not in pane and "INFO" not in pane, pane
    assert re.search(r"^[0-9a-f]{16} succeeded: exit code 0$", pane, re.M), pane
    assert re.search(r"^done-\w+=0$", pane, re.M), pane


def test_jobs_fits_the_width_with_full_ids(terminal: Terminal, gw: Gateway) -> None:
    submitted = hpcgw(gw, *SUBMIT, "--json")
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.split('"id":"', 1)[1][:16]
    pane = terminal.run("hpcgw jobs")
    rows = [line for line in pane.splitlines() if line.startswith(("JOBID", job_id[:4]))]
    assert rows and all(len(line) <= 80 for line in rows), rows  # -J: a wrapped line would come back longer
    assert any(line.startswith(job_id) for line in rows), pane  # the whole id, ready to copy
    assert "HTTP Request" not in pane
    status = terminal.run(f"hpcgw status {job_id[:6]}")  # a unique prefix is enough, as with git
    hash_lines = [line for line in status.splitlines() if "data_version:" in line]
    assert hash_lines and hash_lines[0].rstrip().endswith("v1"), status  # key and value on one line
    assert all(len(line) <= 80 for line in status.splitlines() if ": " in line), status
    verbose = terminal.run("hpcgw -v jobs -n 1")
    assert "HTTP Request: GET" in verbose  # -v shows the requests


def test_piped_output_is_plain_lines_one_per_change(gw: Gateway) -> None:
    env = {**os.environ, "HPCGW_URL": gw.url, "HPCGW_TOKEN": "team-a-dev-token"}
    command = " ".join(shlex.quote(a) for a in [HPCGW, *SUBMIT, "--wait"]) + " | cat"
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    assert not ANSI.search(done.stdout) and not ANSI.search(done.stderr), (done.stdout, done.stderr)
    assert out and all(a != b for a, b in itertools.pairwise(out)), out  # every line carries a change
    assert out[0].split("  ")[1] in ("accepted", "queued") and out[-1].split("  ")[1] == "succeeded", out
    assert "HTTP Request" not in done.stderr
    watched = subprocess.run(
        [HPCGW, "watch", "--iterations", "2", "-i", "0.5"], capture_output=True, text=True, env=env, timeout=60
    )
    assert watched.returncode == 0 and not ANSI.search(watched.stdout), watched.stderr


def test_completion_offers_job_ids_algorithms_and_partitions(gw: Gateway) -> None:
    submitted = hpcgw(gw, *SUBMIT, "--json")
    job_id = submitted.stdout.split('"id":"', 1)[1][:16]

    def complete(words: str) -> list[str]:
        env = {
            **os.environ,
            "HPCGW_URL": gw.url,
            "HPCGW_TOKEN": "team-a-dev-token",
            "_HPCGW_COMPLETE": "complete_bash",  # what the installed completion script sets (--install-completion)
            "COMP_WORDS": words,
            "COMP_CWORD": str(len(words.split(" ")) - 1),
        }
        done = subprocess.run([HPCGW], capture_output=True, text=True, env=env, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    assert job_id in complete(f"hpcgw status {job_id[:3]}")
    assert complete("hpcgw submit --algorithm sl") == ["sleep"]
    assert "team-a" in complete("hpcgw submit --partition team")
    offline = {**os.environ, "HPCGW_URL": "http://127.0.0.1:9", "HPCGW_TOKEN": "x", "_HPCGW_COMPLETE": "complete_bash"}
    started = time.monotonic()
    quiet = subprocess.run(
        [HPCGW], capture_output=True, text=True, env={**offline, "COMP_WORDS": "hpcgw logs ", "COMP_CWORD": "2"}
    )
    assert quiet.stdout.strip() == "" and time.monotonic() - started < 10  # no gateway: nothing, and quickly
