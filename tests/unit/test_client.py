"""The client's error handling: retries on 503 and connection errors, never on 4xx; config resolution."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from gateway.client import Client, ClientConfigError, ClientError, resolve
from launchers.slurm.times import parse_duration_min as parse_time_min
from launchers.slurm.times import parse_mem_gb

JOB = {
    "id": "j1",
    "name": "t",
    "team": "team-a",
    "user": "alice",
    "state": "queued",
    "slurm_job_id": "5",
    "slurm_state": "PENDING",
    "reason": "Priority",
    "position_in_queue": 2,
    "exit_code": None,
    "restarts": 0,
    "submit_time": "2026-11-23T03:00:00Z",
    "start_time": None,
    "end_time": None,
    "partition": "team-a",
    "account": "team-a",
    "qos": None,
    "resources": {"nodes": 1},
    "algorithm": "a",
    "algorithm_version": "1",
    "image": "i",
    "image_digest": None,
    "dataset_id": "d",
    "train_data_version_hash": "h",
    "parameters": {},
    "idempotency_key": None,
    "rerun_of": None,
}


def scripted(responses: list[object]) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        item = responses.pop(0)
        if isinstance(item, Exception):
            raise item
        return item  # type: ignore[return-value]

    return httpx.MockTransport(handler), seen


def test_retries_503_and_connection_errors_then_succeeds() -> None:
    transport, seen = scripted([httpx.Response(503), httpx.ConnectError("refused"), httpx.Response(200, json=JOB)])
    with Client("http://gw", "t", transport=transport, backoff_s=0.001) as c:
        job = c.job("j1")
    assert job.position_in_queue == 2 and job.state.value == "queued"
    assert len(seen) == 3 and seen[0].headers["Authorization"] == "Bearer t"


def test_never_retries_4xx_and_carries_the_detail() -> None:
    transport, seen = scripted([httpx.Response(422, json={"detail": "unknown algorithm 'x'", "field": "algorithm"})])
    with Client("http://gw", "t", transport=transport, backoff_s=0.001) as c, pytest.raises(ClientError) as info:
        c.submit({"algorithm": "x"})
    assert len(seen) == 1
    assert info.value.status_code == 422 and info.value.field == "algorithm" and "unknown algorithm" in str(info.value)


def test_gives_up_after_the_retries() -> None:
    transport, seen = scripted([httpx.ConnectError("down")] * 3)
    with (
        Client("http://gw", "t", transport=transport, retries=2, backoff_s=0.001) as c,
        pytest.raises(ClientError, match="unreachable"),
    ):
        c.job("j1")
    assert len(seen) == 3


def test_url_and_token_from_arguments_environment_or_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HPCGW_URL", raising=False)
    monkeypatch.delenv("HPCGW_TOKEN", raising=False)
    config = tmp_path / "config.toml"
    config.write_text('url = "http://file:1/"\ntoken = "from-file"\n')
    assert resolve(None, None, config) == ("http://file:1", "from-file")
    monkeypatch.setenv("HPCGW_URL", "http://env:2")
    assert resolve(None, None, config) == ("http://env:2", "from-file")
    assert resolve("http://arg:3", "arg-token", config) == ("http://arg:3", "arg-token")
    with pytest.raises(ClientConfigError, match="no token"):
        resolve("http://x", None, tmp_path / "missing.toml")


@pytest.mark.parametrize(
    ("text", "minutes"), [("30", 30), ("1:30", 2), ("2:00:00", 120), ("1-0", 1440), ("1-2:30", 1590), ("0-0:0:59", 1)]
)
def test_slurm_time_formats(text: str, minutes: int) -> None:
    assert parse_time_min(text) == minutes


def test_memory_sizes() -> None:
    assert parse_mem_gb("16G") == 16 and parse_mem_gb("2048") == 2 and parse_mem_gb("1T") == 1024


def test_429_and_503_wait_what_retry_after_says(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr("gateway.client.time.sleep", slept.append)
    limited = httpx.Response(429, headers={"Retry-After": "7"}, json={"detail": "rate limit", "field": None})
    busy = httpx.Response(503, headers={"Retry-After": "2"}, json={"detail": "database", "field": None})
    transport, seen = scripted([limited, busy, httpx.Response(200, json=JOB)])
    with Client("http://gw", "t", transport=transport, backoff_s=0.5) as c:
        assert c.job("j1").id == "j1"
    assert len(seen) == 3 and slept == [7.0, 2.0]  # the server's advice, not the back-off


def test_a_retry_after_beyond_the_clients_patience_is_the_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gateway.client.time.sleep", lambda _s: None)
    transport, seen = scripted([httpx.Response(429, headers={"Retry-After": "3600"}, json={"detail": "full"})])
    with Client("http://gw", "t", transport=transport) as c, pytest.raises(ClientError) as info:
        c.submit({"algorithm": "x"})
    assert len(seen) == 1 and info.value.status_code == 429
