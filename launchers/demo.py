"""`make demo`: a 2-node, 4-rank Horovod allreduce on the local cluster, followed to its end.

It prints each rank's result (read from the job's output) and the job's final state from sacct, and exits
non-zero unless Slurm says COMPLETED and every rank saw the right sum.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from launchers.slurm import sacct, sbatch, wait_until_done
from launchers.templates import render


def allreduce_reports(output: Path) -> list[dict[str, object]]:
    """The per-rank JSON lines the smoke job printed, ordered by rank."""
    reports = []
    for line in output.read_text(errors="replace").splitlines():
        if line.startswith("HPCGW_ALLREDUCE "):
            reports.append(json.loads(line.removeprefix("HPCGW_ALLREDUCE ")))
    return sorted(reports, key=lambda r: int(r["rank"]))  # type: ignore[call-overload]


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
        )
    )
    job_id = sbatch(script)
    return job_id, workdir / f"allreduce-{job_id}.out"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m launchers.demo", description=__doc__)
    parser.add_argument("--partition", default="team-a")
    parser.add_argument("--workdir", type=Path, default=Path(".hpcgw/demo"))
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the job")
    args = parser.parse_args(argv)

    started = time.monotonic()
    job_id, output = submit_allreduce(args.workdir.resolve(), partition=args.partition)
    print(f"submitted job {job_id}: 2 nodes x 2 tasks, Horovod allreduce on partition {args.partition}")
    final = wait_until_done(job_id, timeout_s=args.timeout)
    reports = allreduce_reports(output) if output.exists() else []
    for r in reports:
        print(
            f"  rank {r['rank']}/{r['size']} on {r['node']} (local {r['local_rank']}, cross {r['cross_rank']}):"
            f" sum={r['sum']} expected={r['expected']} {'ok' if r['ok'] else 'WRONG'}"
        )
    steps = sacct([job_id], all_steps=True)
    print(
        f"sacct: job {final.job_id} {final.slurm_state} exit {final.exit_code}:{final.exit_signal} "
        f"partition {final.partition} nodes {final.nodes} ({final.node_list}) elapsed {final.elapsed}"
    )
    for step in steps:
        if step.is_step:
            print(f"  step {step.job_id}: {step.slurm_state} exit {step.exit_code}:{step.exit_signal}")
    ok = final.slurm_state == "COMPLETED" and len(reports) == 4 and all(r["ok"] for r in reports)
    print(f"demo {'succeeded' if ok else 'FAILED'} in {time.monotonic() - started:.1f} s (output: {output})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
