"""One submission client, run as its own process (as the job's user when it talks to slurmrestd, whose
rest_auth/local takes the caller's uid from the socket): N threads, each with its own keep-alive connection,
send COUNT submissions in all and print the latencies as JSON. The gateway and slurmrestd are measured with this
same code, so that neither gets a faster client.

The standard library's http.client sends a request's headers and body in one write. httpx writes them apart,
and over TCP (not over slurmrestd's unix socket) Nagle's algorithm then holds the body back until the server's
delayed ACK of the headers: 40 ms on every POST, which is the client's cost, not the server's."""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import sys
import threading
import time
from urllib.parse import urlsplit


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.submitter", description=__doc__)
    parser.add_argument("--url", required=True, help="the submission URL")
    parser.add_argument("--socket", help="a unix socket to reach --url through (slurmrestd)")
    parser.add_argument("--token", help="a bearer token (the gateway)")
    parser.add_argument("--body", required=True, help="the JSON body, with {n} replaced by the submission's number")
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--count", type=int, default=100, help="jobs to send in all")
    parser.add_argument(
        "--batch", type=int, default=0, help='send jobs K at a time as {"jobs": [...]} (POST /v1/jobs/batch)'
    )
    args = parser.parse_args()
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {args.token}"} if args.token else {})
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    counter = iter(range(args.count))

    target = urlsplit(args.url)

    def connect() -> http.client.HTTPConnection:
        if args.socket:
            return UnixConnection(args.socket)
        return http.client.HTTPConnection(target.hostname or "localhost", target.port or 80, timeout=120)

    def run() -> None:
        connection = connect()
        while True:
            with lock:
                numbers = [n for n in (next(counter, None) for _ in range(max(1, args.batch))) if n is not None]
            if not numbers:
                connection.close()
                return
            bodies = [args.body.replace("{n}", str(n)) for n in numbers]
            payload = (f'{{"jobs": [{", ".join(bodies)}]}}' if args.batch else bodies[0]).encode()
            started = time.perf_counter()
            connection.request("POST", target.path, body=payload, headers=headers)
            response = connection.getresponse()
            text = response.read().decode()
            elapsed = time.perf_counter() - started
            ok = response.status in (200, 201) and not (args.socket and _slurm_errors(text))
            if ok and args.batch:
                ok = json.loads(text)["created"] == len(numbers)
            with lock:
                latencies.append(elapsed)
                if not ok:
                    errors.append(f"{response.status}: {text[:300]}")

    threads = [threading.Thread(target=run) for _ in range(args.clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    json.dump({"latencies": latencies, "wall_s": wall, "errors": errors[:5], "error_count": len(errors)}, sys.stdout)
    return 0


def _slurm_errors(text: str) -> bool:
    """slurmrestd answers 200 with an ``errors`` list; a held job's notice (2042) is not a failure."""
    data = json.loads(text)
    return not data.get("job_id") or any(e.get("error_code") not in (0, 2042) for e in data.get("errors", []))


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=120)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


if __name__ == "__main__":
    sys.exit(main())
