"""Load: 200 pollers and 50 submissions a second against ``hpcgw serve`` on the local cluster, for 5 minutes.

Each poller follows one job as ``hpcgw wait`` does (a GET a second); the submissions come on a fixed schedule
(open loop: a slow answer does not slow the offered rate). It reports, for each kind of request, the answers by
status, the errors (5xx, timeouts, refused connections) and p50/p99 latency, and the worker's cycle time
sampled from /metrics. A 429 is the gateway's back-pressure (a full backlog, a rate limit), counted apart.

Run alone with ``python -m bench.load [--duration 300]``; ``make bench`` runs it after the other cases. The load
generator shares the 2 cores with the gateway and Slurm: the figures are for this machine as a whole.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from bench.support import ADMIN, TOKEN, gateway, pct, register, request, scancel_all, team
from devcluster import use_local_cluster
from gateway.config import load_config
from gateway.site import accounts

REPO = Path(__file__).resolve().parent.parent
REQUEST_TIMEOUT_S = 30.0
SUBMIT_CONNECTIONS = 100  # at most this many submissions in flight; later ones wait (and that wait is counted)
# The backlog and the Slurm limits are roomy: the bench measures the gateway, not its back-pressure.
TEAMS = {
    "team-a": team("team-a", max_nodes=2, max_running_jobs=2000, max_queued_jobs=20000),
    "team-b": team("team-b"),
}


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)

    def add(self, status: str, seconds: float) -> None:
        self.statuses[status] += 1
        self.latencies.append(seconds)

    def report(self) -> dict[str, Any]:
        errors = sum(n for s, n in self.statuses.items() if s != "not sent" and (not s.isdigit() or int(s) >= 500))
        return {
            "requests": sum(self.statuses.values()),
            "statuses": dict(sorted(self.statuses.items())),
            "errors": errors,
            "p50_ms": statistics.median(self.latencies) * 1e3 if self.latencies else None,
            "p99_ms": pct(self.latencies, 99) * 1e3 if self.latencies else None,
        }


class Connection:
    """One keep-alive HTTP/1.1 connection, spoken by hand: httpx costs ~1 ms of CPU a request, which on 2 cores
    would make the load generator, not the gateway, the bottleneck."""

    def __init__(self, host: str, port: int, token: str) -> None:
        self.host, self.port, self.token = host, port, token
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        reused = self.streams is not None
        try:
            return await self._exchange(method, path, body)
        except (ConnectionError, asyncio.IncompleteReadError, IndexError):
            if not reused:
                raise
        return await self._exchange(method, path, body)  # the server closed it while idle (keep-alive timeout)

    async def _exchange(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        if self.streams is None:
            self.streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.streams
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\nAuthorization: Bearer {self.token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        try:
            writer.write(head.encode() + body)
            status = int((await reader.readline()).split()[1])
            length, close = 0, False
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                if name.lower() == "content-length":
                    length = int(value)
                elif name.lower() == "connection" and value.strip().lower() == "close":
                    close = True
            payload = await reader.readexactly(length)
        except BaseException:
            self.close()
            raise
        if close:
            self.close()
        return status, payload

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


async def _timed(tally: Tally, connection: Connection, method: str, path: str, body: bytes, since: float) -> bytes:
    """One request; its latency counts from ``since`` (when it was due), so a queue before it is counted too."""
    try:
        status, payload = await asyncio.wait_for(connection.request(method, path, body), REQUEST_TIMEOUT_S)
    except TimeoutError:
        tally.add("timeout", time.monotonic() - since)
        return b""
    except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
        tally.add(type(exc).__name__, time.monotonic() - since)
        return b""
    tally.add(str(status), time.monotonic() - since)
    return payload


async def _poller(connection: Connection, job_id: str, tally: Tally, until: float, offset: float) -> None:
    await asyncio.sleep(offset)  # spread the pollers over the second
    while (tick := time.monotonic()) < until:
        await _timed(tally, connection, "GET", f"/v1/jobs/{job_id}", b"", tick)
        await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))


async def _submitter(
    connections: list[Connection], body: bytes, rate: float, tally: Tally, until: float
) -> tuple[int, float]:
    """Open loop: submission k is due at start + k/rate, whatever the answers before it. Returns how many were
    sent and the largest lag of a send behind its due time (the generator's own limit)."""
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    for connection in connections:
        idle.put_nowait(connection)

    async def one(due: float) -> None:
        connection = await idle.get()
        try:
            if time.monotonic() < until:
                await _timed(tally, connection, "POST", "/v1/jobs", body, due)
            else:  # the load is over: what still waits for a connection is not sent (and is counted apart)
                tally.statuses["not sent"] += 1
        finally:
            idle.put_nowait(connection)

    tasks: list[asyncio.Task[None]] = []
    start, sent, lag = time.monotonic(), 0, 0.0
    while (due := start + sent / rate) < until:
        now = time.monotonic()
        if due > now:
            await asyncio.sleep(due - now)
        lag = max(lag, time.monotonic() - due)
        tasks.append(asyncio.create_task(one(due)))
        sent += 1
    await asyncio.gather(*tasks)
    return sent, lag


async def _cycles(
    connection: Connection, until: float, samples: list[float], counters: list[tuple[float, float]]
) -> None:
    """The worker's last cycle time every 2 s, and its cycle count and total time (for the mean)."""
    while time.monotonic() < until:
        text = (await _timed(Tally(), connection, "GET", "/metrics", b"", time.monotonic())).decode()
        last = re.search(r"^hpcgw_poll_cycle_last_seconds (\S+)$", text, re.M)
        count = re.search(r"^hpcgw_poll_cycle_seconds_count (\S+)$", text, re.M)
        total = re.search(r"^hpcgw_poll_cycle_seconds_sum (\S+)$", text, re.M)
        if last and count and total:
            samples.append(float(last.group(1)))
            counters.append((float(count.group(1)), float(total.group(1))))
        await asyncio.sleep(2)


async def load(base: str, digest: str, *, pollers: int, rate: float, duration_s: float) -> dict[str, Any]:
    host, port = base.removeprefix("http://").split(":")
    token = TOKEN["Authorization"].removeprefix("Bearer ")
    followed = []
    seeder = Connection(host, int(port), token)
    for _ in range(pollers):  # the jobs the pollers follow: real ones, going through Slurm
        status, payload = await seeder.request("POST", "/v1/jobs", json.dumps(request(digest)).encode())
        assert status == 201, payload
        followed.append(json.loads(payload)["id"])
    seeder.close()
    polls, submissions = Tally(), Tally()
    samples: list[float] = []
    counters: list[tuple[float, float]] = []
    poll_connections = [Connection(host, int(port), token) for _ in range(pollers)]
    post_connections = [Connection(host, int(port), token) for _ in range(SUBMIT_CONNECTIONS)]
    until = time.monotonic() + duration_s
    started = time.monotonic()
    results = await asyncio.gather(
        _submitter(post_connections, json.dumps(request(digest)).encode(), rate, submissions, until),
        _cycles(Connection(host, int(port), ADMIN["Authorization"].removeprefix("Bearer ")), until, samples, counters),
        *(
            _poller(c, job_id, polls, until, i / pollers)
            for i, (c, job_id) in enumerate(zip(poll_connections, followed, strict=True))
        ),
    )
    elapsed = time.monotonic() - started
    for connection in poll_connections + post_connections:
        connection.close()
    sent, lag = cast(tuple[int, float], results[0])  # gather of mixed awaitables types its list by the last
    (count0, sum0), (count1, sum1) = (counters[0], counters[-1]) if counters else ((0.0, 0.0), (0.0, 0.0))
    return {
        "pollers": pollers,
        "offered_submissions_per_s": rate,
        "duration_s": round(elapsed, 1),
        "submitted": sent,
        "generator_max_lag_ms": lag * 1e3,
        "polls": polls.report(),
        "submissions": submissions.report(),
        "worker_cycle": {
            "cycles": int(count1 - count0),
            "mean_ms": (sum1 - sum0) / (count1 - count0) * 1e3 if count1 > count0 else None,
            "samples": len(samples),
            "p50_ms": statistics.median(samples) * 1e3 if samples else None,
            "p99_ms": pct(samples, 99) * 1e3 if samples else None,
            "max_ms": max(samples) * 1e3 if samples else None,
        },
    }


def bench_load(root: Path, *, pollers: int = 200, rate: float = 50.0, duration_s: float = 300.0) -> dict[str, Any]:
    """One gateway with roomy limits (and rate limits above the offered rate), then everything cancelled."""
    bucket = {"per_min": rate * 120, "burst": int(rate * 10) + pollers}  # twice the offered rate
    limits = {"per_token": bucket, "per_team": bucket}
    root.mkdir(parents=True, exist_ok=True)
    (root / "datasets").mkdir(exist_ok=True)
    try:
        with gateway(root, teams=TEAMS, rate_limits=limits) as base:
            accounts.sync(load_config(root / "gateway.toml"))
            digest = register(base, root)
            return asyncio.run(load(base, digest, pollers=pollers, rate=rate, duration_s=duration_s))
    finally:
        scancel_all()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pollers", type=int, default=200)
    parser.add_argument("--rate", type=float, default=50.0, help="submissions offered per second")
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of load")
    args = parser.parse_args()
    use_local_cluster()
    root = Path(tempfile.mkdtemp(prefix="hpcgw-load-"))
    root.chmod(0o711)  # the jobs run as alice, who must reach her folders
    try:
        result = bench_load(root, pollers=args.pollers, rate=args.rate, duration_s=args.duration)
    finally:
        accounts.sync(load_config(REPO / "config" / "example.toml"))  # the development cluster's own limits again
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
