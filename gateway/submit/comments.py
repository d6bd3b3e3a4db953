"""The Slurm comments the gateway gives its jobs: how it finds them again after a crash (reconciliation) and
tells its jobs from others' with a reused id (the worker's poll). One comment per job, per sweep attempt's array,
or per coalesced array."""

from __future__ import annotations

import re

from gateway.store.models import Job

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def slurm_comment(job_id: str) -> str:
    return f"hpcgw:{job_id}"


def sweep_comment(sweep_id: str, attempt: int) -> str:
    """One comment per array: the tasks of a sweep's attempt share it."""
    return f"hpcgw:sweep:{sweep_id}:{attempt}"


def batch_comment(batch_id: str) -> str:
    """One comment per coalesced array (its elements share it); reconciliation finds the array by it."""
    return f"hpcgw:batch:{batch_id}"


def expected_comment(job: Job) -> str:
    """The comment the job's Slurm job carries: its own, its sweep attempt's or its batch's (one per array)."""
    if job.sweep_id:
        return sweep_comment(job.sweep_id, job.attempt)
    return batch_comment(job.batch_id) if job.batch_id else slurm_comment(job.id)


def job_id_from_comment(comment: str) -> str | None:
    if comment.startswith("hpcgw:") and _SAFE_ID.match(comment[6:]):
        return comment[6:]
    return None
