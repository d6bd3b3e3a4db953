"""One submission client, run as its own process (as the job's user when it talks to slurmrestd, whose
rest_auth/local takes the caller's uid from the socket): N threads, each with its own keep-alive connection,
send COUNT submissions in all and print the latencies as JSON. The gateway and slurmrestd are measured with this
same code, so that neither gets a faster client."""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from typing import Any

import httpx


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.submitter", description=__doc__)
    parser.add_argument("--url", required=True, help="the submission URL")
    parser.add_argument("--socket", help="a unix socket to reach --url through (slurmrestd)")
    parser.add_argument("--token", help="a bearer token (the gateway)")
    parser.add_argument("--body", required=True, help="the JSON body, with {n} replaced by the submission's number")
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--count", type=int, default=100)
    args = parser.parse_args()
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    counter = iter(range(args.count))

    def run() -> None:
        transport = httpx.HTTPTransport(uds=args.socket) if args.socket else None
        with httpx.Client(transport=transport, headers=headers, timeout=120) as client:
            while True:
                with lock:
                    n = next(counter, None)
                if n is None:
                    return
                body: Any = json.loads(args.body.replace("{n}", str(n)))
                started = time.perf_counter()
                response = client.post(args.url, json=body)
                elapsed = time.perf_counter() - started
                ok = response.status_code in (200, 201) and not _slurm_errors(response)
                with lock:
                    latencies.append(elapsed)
                    if not ok:
                        errors.append(f"{response.status_code}: {response.text[:300]}")

    threads = [threading.Thread(target=run) for _ in range(args.clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    json.dump({"latencies": latencies, "wall_s": wall, "errors": errors[:5], "error_count": len(errors)}, sys.stdout)
    return 0


def _slurm_errors(response: httpx.Response) -> bool:
    """slurmrestd answers 200 with an ``errors`` list; a held job's notice (2042) is not a failure."""
    if "/slurm/" not in str(response.url):
        return False
    data = response.json()
    return not data.get("job_id") or any(e.get("error_code") not in (0, 2042) for e in data.get("errors", []))


if __name__ == "__main__":
    sys.exit(main())
