"""The body limit holds for the bytes actually received: a chunked body declares no length, and a declared length
may lie, so only counting what arrives keeps an unauthenticated caller from filling the API's memory."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from fastapi.testclient import TestClient

from gateway.app import create_app
from tests.gateway.conftest import auth, make_config
from tests.gateway.support import MiB, send_chunked


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[int]:
    """A real uvicorn on loopback, in this process (its memory is this process's memory)."""
    app = create_app(make_config(tmp_path, f"sqlite:///{tmp_path}/gateway.db"), run_worker=False)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    serving = uvicorn.Server(config)
    thread = threading.Thread(target=serving.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not serving.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield sock.getsockname()[1]
    serving.should_exit = True
    thread.join(timeout=10)


def test_a_chunked_body_past_the_limit_is_refused_unread(server: int) -> None:
    before = _rss_bytes()
    head = "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    answer, sent, seconds = send_chunked(server, 300 * MiB, head=head)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < 64 * MiB, f"the server read {sent} bytes before answering"
    assert seconds < 10
    assert _rss_bytes() - before < 64 * MiB


def test_a_lying_declared_length_is_refused_at_the_limit(tmp_path: Path) -> None:
    """An ASGI server that passes on more than the declared length (or a client that declares nothing): the count,
    not the header, decides."""
    app = create_app(make_config(tmp_path, f"sqlite:///{tmp_path}/gateway.db"), run_worker=False)

    def chunks() -> Iterator[bytes]:
        for _ in range(4):
            yield b"x" * MiB

    with TestClient(app) as client:
        response = client.post(
            "/v1/jobs", content=chunks(), headers={**auth("alice"), "Content-Type": "application/json"}
        )
        assert response.status_code == 413
        assert "larger than" in response.json()["detail"]
        small = client.post(
            "/v1/jobs", content=iter([b"{not json"]), headers={**auth("alice"), "Content-Type": "application/json"}
        )
        assert small.status_code == 422
