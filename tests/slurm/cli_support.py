"""The tests of the `hpcgw` CLI on Slurm share: the real `hpcgw` executable, a gateway it serves (`hpcgw serve`)
with the algorithms they run, and the CLI run against it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.support import HPCGW
from devcluster.spec import ClusterSpec
from gateway.client import wait_healthy
from tests.slurm.support import IMAGE, in_image, serve, write_config

ALGORITHMS: list[dict[str, Any]] = [
    {"name": "hello", "local_command": [sys.executable, "-c", "print('hello from the trainer', flush=True)"]},
    {"name": "fail3", "local_command": [sys.executable, "-c", "import sys; print('about to fail'); sys.exit(3)"]},
    {"name": "sleep", "local_command": [sys.executable, "-c", "import os, time; time.sleep(float(os.environ['S']))"]},
]


class Gateway:
    def __init__(self, root: Path) -> None:
        self.root = root
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        write_config(root / "gw.toml", root)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = [HPCGW, "serve", "--config", str(self.root / "gw.toml"), "--port", str(self.port)]
        self.proc = serve(argv, subprocess.DEVNULL)
        wait_healthy(self.url, alive=lambda: self.proc is not None and self.proc.poll() is None)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)


@pytest.fixture
def gw(cluster: ClusterSpec, tmp_path: Path) -> Iterator[Gateway]:
    (tmp_path / "datasets" / "d" / "v1").mkdir(parents=True)
    gateway = Gateway(tmp_path)
    gateway.start()
    for algorithm in ALGORITHMS:
        body: dict[str, Any] = {"version": "1", "image": IMAGE, "team": "team-a"} | algorithm
        body["command"] = in_image(algorithm["local_command"])
        httpx.post(
            f"{gateway.url}/v1/algorithms", json=body, headers={"Authorization": "Bearer admin-dev-token"}
        ).raise_for_status()
    yield gateway
    gateway.stop()


def hpcgw(gw: Gateway, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HPCGW_URL": gw.url, "HPCGW_TOKEN": "team-a-dev-token", "COLUMNS": "200"}
    return subprocess.run([HPCGW, *args], capture_output=True, text=True, env=env, timeout=timeout)


DATA = ["--dataset", "d", "--data-version", "v1"]
