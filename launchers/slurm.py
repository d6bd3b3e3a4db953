"""Thin calls to Slurm's commands, all through :func:`launchers.shell.run`."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from launchers.sacct import SacctRow, parse_sacct, sacct_argv
from launchers.shell import run


class SlurmError(RuntimeError):
    """Slurm answered, but not with what we asked for."""


def slurm_env() -> dict[str, str]:
    """SLURM_CONF for the local development cluster when one was brought up here and none is set."""
    if os.environ.get("SLURM_CONF"):
        return {}
    from launchers.devcluster.spec import ClusterSpec

    spec = ClusterSpec.load()
    return spec.slurm_env if spec is not None else {}


def sbatch(script: Path, args: Sequence[str] = ()) -> str:
    """Submit ``script``; returns the job id. sbatch reads ``#SBATCH`` lines from the file itself."""
    out = run(["sbatch", "--parsable", *args, str(script)], env=slurm_env(), timeout_s=60).stdout.strip()
    job_id = out.split(";", 1)[0]
    if not job_id.isdigit():
        raise SlurmError(f"sbatch printed {out!r}, not a job id")
    return job_id


def sacct(job_ids: Iterable[str], *, all_steps: bool = False) -> list[SacctRow]:
    ids = list(job_ids)
    if not ids:
        return []
    return parse_sacct(run(sacct_argv(ids, all_steps=all_steps), env=slurm_env(), timeout_s=60).stdout)


def wait_until_done(job_id: str, *, timeout_s: float, poll_s: float = 1.0) -> SacctRow:
    """Poll sacct for one job until it reaches a terminal state; for scripts and tests, not the gateway."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows = [r for r in sacct([job_id]) if r.job_id == job_id]
        if rows and rows[0].settled:
            return rows[0]
        if time.monotonic() > deadline:
            state = rows[0].slurm_state if rows else "not yet in accounting"
            raise TimeoutError(f"job {job_id} not finished after {timeout_s:.0f} s (last state: {state})")
        time.sleep(poll_s)
