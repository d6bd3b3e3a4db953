"""Slurm job ids: ``123`` (a job), ``123_4`` (an array element), ``123_[4-11%3]`` (a pending range),
``123.batch`` / ``123.0`` (steps). One place knows their grammar.

A range is text from Slurm about a job anyone may have submitted: it is never turned into a list of every id it
covers (``0-4000000`` would be four million strings), only intersected with the ids the caller wants."""

from __future__ import annotations

from collections.abc import Collection

# Slurm's own ceiling for MaxArraySize: an index at or above it cannot exist on any cluster.
MAX_ARRAY_INDEX = 4_000_001
# Ranges up to this many ids are walked; wider ones are answered from the wanted ids instead.
WALK_LIMIT = 10_000


def master_id(job_id: str) -> str:
    """The id to ask sacct about: an array's own id covers all its elements in one row set."""
    return job_id.split("_", 1)[0].split(".", 1)[0]


def element_id(array_id: str, index: int) -> str:
    return f"{array_id}_{index}"


def is_step(job_id: str) -> bool:
    return "." in job_id


def parse_ranges(spec: str) -> list[range]:
    """``'4-11:2,15%3'`` -> ``[range(4, 12, 2), range(15, 16)]``; ValueError for anything Slurm does not print,
    or for an index Slurm could never give."""
    spans: list[range] = []
    for part in spec.split("%", 1)[0].split(","):
        bounds, _, step = part.partition(":")
        low, dash, high = bounds.partition("-")
        numbers = (low, high if dash else low, step if ":" in part else "1")
        if not all(n.isascii() and n.isdigit() and len(n) <= 7 for n in numbers):
            raise ValueError(f"not an array range: {spec!r}")
        first, last, stride = (int(n) for n in numbers)
        if last < first or last >= MAX_ARRAY_INDEX or stride < 1:
            raise ValueError(f"not an array range: {spec!r}")
        spans.append(range(first, last + 1, stride))
    return spans


def split_range(job_id: str) -> tuple[str, list[range]] | None:
    """``'123_[4-11%3]'`` -> ``('123', [range(4, 12)])``; None for an id that is no range."""
    master, sep, rest = job_id.partition("_[")
    if not sep:
        return None
    if not (master.isascii() and master.isdigit() and rest.endswith("]")):
        raise ValueError(f"not an array range: {job_id!r}")
    return master, parse_ranges(rest[:-1])


def members(master: str, spans: list[range], wanted: Collection[str]) -> list[str]:
    """The element ids of ``master`` in ``spans`` that are in ``wanted``, however wide the spans are."""
    found: list[str] = []
    for span in spans:
        if len(span) <= WALK_LIMIT:
            found += [one for i in span if (one := element_id(master, i)) in wanted]
            continue
        prefix = f"{master}_"
        for one in wanted:
            index = one[len(prefix) :] if one.startswith(prefix) else ""
            if index.isascii() and index.isdigit() and int(index) in span:
                found.append(one)
    return found


def wanted_ids(job_id: str, wanted: Collection[str]) -> list[str]:
    """The ids in ``wanted`` that a printed id stands for: itself, or the elements of a pending range.
    ValueError for a malformed range."""
    parsed = split_range(job_id)
    if parsed is None:
        return [job_id] if job_id in wanted else []
    return members(*parsed, wanted)


def expand_array_id(job_id: str, limit: int = WALK_LIMIT) -> list[str]:
    """``'123_[4-11%3]'`` (a pending range, as sacct and squeue print it) -> ``['123_4', …, '123_11']``;
    any other id is returned alone. ValueError for a range of more than ``limit`` ids: callers that may meet
    someone else's range use :func:`wanted_ids`."""
    parsed = split_range(job_id)
    if parsed is None:
        return [job_id]
    master, spans = parsed
    if sum(len(s) for s in spans) > limit:
        raise ValueError(f"array range {job_id!r} has more than {limit} ids")
    return [element_id(master, i) for span in spans for i in span]
