"""What the gateway costs on top of Slurm, measured side by side in one process on the local cluster.

Run with `make bench` (or `python -m bench.bench`). It prints one table and writes the raw figures to
bench/results/<timestamp>.json. Every comparison runs back to back on the same cluster; figures are medians
(and p95/p99 where asked) over repeated runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.cases import bench_get, bench_submission, bench_sweep, bench_time_to_running, bench_tracking
from bench.container import bench_container, container_lines
from bench.fairness import bench_fairness
from bench.health import bench_health
from bench.load import bench_load
from bench.report import health_line, restd_table, table
from bench.restd import bench_restd
from bench.support import gateway, register, scancel_all
from bench.ui import bench_ui_both, ui_lines
from devcluster import use_local_cluster
from gateway.config import load_config
from gateway.site import accounts

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench", description=__doc__)
    parser.add_argument("--repeats", type=int, default=60, help="submissions per method")
    parser.add_argument("--tracked", default="10,100,1000", help="active job counts for the tracking bench")
    parser.add_argument("--sweep-tasks", type=int, default=1000)
    parser.add_argument("--get-jobs", type=int, default=1000)
    parser.add_argument("--load-duration", type=float, default=300.0, help="seconds of the load case")
    parser.add_argument(
        "--only",
        choices=("all", "restd", "health", "ui", "container"),
        default="all",
        help="restd: only the slurmrestd comparison (issue 13); health: only the health checks' cost (issue 14); "
        "ui: only the dashboard's render times (issue 16); container: only the image against runtime none "
        "(issue 30)",
    )
    parser.add_argument("--api-processes", type=int, default=2, help="`hpcgw serve --processes` in the restd case")
    parser.add_argument("--tracked-get", type=int, default=10_000, help="tracked jobs for the restd case's GETs")
    args = parser.parse_args()

    use_local_cluster()
    root = Path(tempfile.mkdtemp(prefix="hpcgw-bench-"))
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "host": socket.gethostname()},
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    root.chmod(0o711)  # the gateway's jobs run as alice and bob, who must reach their folders
    try:
        scancel_all()
        if args.only == "container":
            results["container"] = bench_container(root / "container")
            return _report(results)
        results["container"] = bench_container(root / "container")
        if args.only == "ui":
            results["ui"] = bench_ui_both(root / "ui")
            return _report(results)
        results["ui"] = bench_ui_both(root / "ui")
        if args.only == "health":
            results["tracking"] = bench_tracking(root, [1000], cycles=5)
            results["health"] = bench_health(root, jobs=1000)
            return _report(results)
        results["health"] = bench_health(root, jobs=1000)
        results["restd"] = bench_restd(root / "restd", api_processes=args.api_processes, tracked=args.tracked_get)
        scancel_all()
        if args.only == "restd":
            return _report(results)
        with gateway(root) as base:
            accounts.sync(load_config(root / "gateway.toml"))  # Slurm's limits as roomy as the bench's teams
            digest = register(base, root)
            results["time_to_running"] = bench_time_to_running(root, base, digest, repeats=5)
            results["submission"] = bench_submission(root, base, digest, args.repeats)
            results["get"] = bench_get(root, base, digest, args.get_jobs, gets=1000)
        results["tracking"] = bench_tracking(root, [int(c) for c in args.tracked.split(",")], cycles=5)
        scancel_all()
        results["sweep"] = bench_sweep(root, args.sweep_tasks)
        scancel_all()
        fair = root / "fairness"
        (fair / "datasets" / "d" / "v1").mkdir(parents=True)
        fair.chmod(0o711)
        results["fairness"] = bench_fairness(fair)
        scancel_all()
        results["load"] = bench_load(root / "load", duration_s=args.load_duration)
    finally:
        scancel_all()
        accounts.sync(load_config(REPO / "config" / "example.toml"))  # the development cluster's own limits again
        shutil.rmtree(root, ignore_errors=True)
    return _report(results)


def _report(results: dict[str, Any]) -> int:
    out_dir = REPO / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{results['started'].replace(':', '')}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    if "submission" in results:
        print(table(results))
        print()
    if "restd" in results:
        print(restd_table(results["restd"]))
    if "health" in results and "tracking" in results:
        print(health_line(results["health"], results["tracking"].get("1000")))
    if "ui" in results:
        print(ui_lines(results["ui"]))
    if "container" in results:
        print(container_lines(results["container"]))
    print(f"\nraw figures: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
