"""Slurm job ids: ``123`` (a job), ``123_4`` (an array element), ``123_[4-11%3]`` (a pending range),
``123.batch`` / ``123.0`` (steps). One place knows their grammar."""

from __future__ import annotations


def master_id(job_id: str) -> str:
    """The id to ask sacct about: an array's own id covers all its elements in one row set."""
    return job_id.split("_", 1)[0].split(".", 1)[0]


def element_id(array_id: str, index: int) -> str:
    return f"{array_id}_{index}"


def is_step(job_id: str) -> bool:
    return "." in job_id


def expand_array_id(job_id: str) -> list[str]:
    """``'123_[4-11%3]'`` (a pending range, as sacct and squeue print it) -> ``['123_4', …, '123_11']``;
    any other id is returned alone."""
    master, sep, rest = job_id.partition("_[")
    if not sep:
        return [job_id]
    body = rest.rstrip("]").split("%", 1)[0]
    ids: list[str] = []
    for part in body.split(","):
        low, _, high = part.partition("-")
        ids += [element_id(master, i) for i in range(int(low), int(high or low) + 1)]
    return ids
