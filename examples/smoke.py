"""A Horovod allreduce that every rank reports on: the smallest job that proves the stack works end to end.

Each rank contributes ``rank + 1``; every rank must see ``size * (size + 1) / 2``. One JSON line per rank goes
to stdout, so the demo and the tests read real results, not exit codes alone.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

from launchers.slurm.commands import sbatch
from launchers.templates import render


def main() -> int:
    import torch

    import horovod.torch as hvd

    hvd.init()
    value = torch.tensor([float(hvd.rank() + 1)], dtype=torch.float64)
    total = hvd.allreduce(value, op=hvd.Sum, name="smoke").item()
    expected = hvd.size() * (hvd.size() + 1) / 2
    report = {
        "rank": hvd.rank(),
        "size": hvd.size(),
        "local_rank": hvd.local_rank(),
        "local_size": hvd.local_size(),
        "cross_rank": hvd.cross_rank(),
        "cross_size": hvd.cross_size(),
        "node": os.environ.get("SLURMD_NODENAME", socket.gethostname()),
        "sum": total,
        "expected": expected,
        "ok": total == expected,
    }
    print("HPCGW_ALLREDUCE " + json.dumps(report, sort_keys=True), flush=True)
    hvd.shutdown()
    return 0 if report["ok"] else 1


def allreduce_reports(output: Path) -> list[dict[str, object]]:
    """The per-rank JSON lines the smoke job printed, ordered by rank."""
    reports = []
    for line in output.read_text(errors="replace").splitlines():
        if line.startswith("HPCGW_ALLREDUCE "):
            reports.append(json.loads(line.removeprefix("HPCGW_ALLREDUCE ")))
    return sorted(reports, key=lambda r: int(str(r["rank"])))


def submit_allreduce(
    workdir: Path, *, partition: str, nodes: int = 2, tasks_per_node: int = 2, time_limit_min: int = 5
) -> tuple[str, Path]:
    """Write the smoke job script under ``workdir`` and submit it; returns (job id, output file)."""
    workdir.mkdir(parents=True, exist_ok=True)
    script = workdir / "allreduce.sbatch"
    script.write_text(
        render(
            "jobs/allreduce.sbatch.j2",
            job_name="hpcgw-allreduce",
            partition=partition,
            account=partition,
            nodes=nodes,
            tasks_per_node=tasks_per_node,
            time_limit_min=time_limit_min,
            output=str(workdir / "allreduce-%j.out"),
            python=sys.executable,
            folder=str(workdir),
            smoke=str(Path(__file__).resolve()),
        )
    )
    job_id = sbatch(script)
    return job_id, workdir / f"allreduce-{job_id}.out"


if __name__ == "__main__":
    sys.exit(main())
