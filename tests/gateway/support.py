"""What the gateway's tests share beyond conftest.py: a function's request body, a chunked upload over a raw
socket, a gateway with tight rate limits, and a count of the image reads."""

from __future__ import annotations

import base64
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.submit import images
from tests.gateway.conftest import auth, make_config

NOT_A_PICKLE = b"\x80\x05 not a pickle at all"  # the gateway takes it: it never loads a payload


def function_body(**overrides: object) -> dict[str, object]:
    return {
        "nodes": 2,
        "tasks_per_node": 2,
        "time_limit_min": 5,
        "payload": base64.b64encode(NOT_A_PICKLE).decode(),
    } | overrides


MiB = 1 << 20


def send_chunked(port: int, total_bytes: int, *, head: str) -> tuple[bytes, int, float]:
    """Streams ``total_bytes`` of chunked body until the server answers or stops reading; returns the answer, the
    bytes sent, and the seconds it took."""
    chunk = b"x" * MiB
    started = time.monotonic()
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(head.encode())
        conn.settimeout(0.0)
        answer = b""
        while sent < total_bytes:
            try:
                answer += conn.recv(65536)
            except BlockingIOError:
                pass
            if answer:
                break
            try:
                conn.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
            except BlockingIOError:  # the server stopped reading: wait for its answer
                time.sleep(0.01)
                continue
            except OSError:  # it closed the connection
                break
            sent += len(chunk)
        conn.settimeout(10)
        try:
            while b"\r\n\r\n" not in answer:
                more = conn.recv(65536)
                if not more:
                    break
                answer += more
        except OSError:
            pass
    return answer, sent, time.monotonic() - started


@contextmanager
def rate_limited(tmp_path: Path, database_url: str, rate_limits: dict[str, Any]) -> Iterator[TestClient]:
    """A client of a gateway with ``rate_limits``, room for 100 queued jobs of team-a, and a shared algorithm
    (intent-classifier, whose trainer is ``true``)."""
    config = make_config(tmp_path, database_url, rate_limits=rate_limits)
    config.teams["team-a"].max_queued_jobs = 100
    with TestClient(create_app(config, run_worker=False)) as client:
        algorithm = {"name": "intent-classifier", "version": "1", "image": "i.sif", "command": ["true"], "shared": True}
        client.post("/v1/algorithms", json=algorithm | {"local_command": ["true"]}, headers=auth("admin"))
        yield client


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many times an image's bytes were read (gateway.submit.images.hash_file), from an empty cache."""
    images.clear_cache()
    calls: list[int] = []
    real = images.hash_file

    def counting(fd: int) -> str:
        calls.append(fd)
        return real(fd)

    monkeypatch.setattr(images, "hash_file", counting)
    return calls
