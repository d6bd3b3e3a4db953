"""Slurm's compact host and task-count notations, expanded without calling `scontrol` from every rank."""

from __future__ import annotations

import re

_RANGE_RE = re.compile(r"^(\d+)(?:-(\d+))?$")
_TASKS_RE = re.compile(r"^(\d+)(?:\(x(\d+)\))?$")


def expand_hostlist(expr: str) -> list[str]:
    """``'n[1-3],gpu[01,07-08]'`` -> ``['n1', 'n2', 'n3', 'gpu01', 'gpu07', 'gpu08']``.

    Zero padding follows the range's lower bound, as Slurm does. Nested brackets do not occur in Slurm's output.
    """
    hosts: list[str] = []
    for item in _split_top_level(expr.strip()):
        match = re.fullmatch(r"([^\[\]]*)\[([^\[\]]+)\]([^\[\]]*)", item)
        if match is None:
            if "[" in item or "]" in item:
                raise ValueError(f"malformed host list {expr!r}")
            hosts.append(item)
            continue
        prefix, ranges, suffix = match.groups()
        for part in ranges.split(","):
            bounds = _RANGE_RE.match(part)
            if bounds is None:
                raise ValueError(f"malformed range {part!r} in host list {expr!r}")
            low, high = bounds.group(1), bounds.group(2) or bounds.group(1)
            if int(high) < int(low):
                raise ValueError(f"descending range {part!r} in host list {expr!r}")
            width = len(low)
            hosts += [f"{prefix}{i:0{width}d}{suffix}" for i in range(int(low), int(high) + 1)]
    return hosts


def expand_tasks_per_node(expr: str) -> list[int]:
    """``'2(x3),1'`` (SLURM_STEP_TASKS_PER_NODE) -> ``[2, 2, 2, 1]``."""
    counts: list[int] = []
    for part in expr.strip().split(","):
        match = _TASKS_RE.match(part)
        if match is None:
            raise ValueError(f"malformed tasks-per-node {expr!r}")
        counts += [int(match.group(1))] * int(match.group(2) or 1)
    return counts


def _split_top_level(expr: str) -> list[str]:
    """Split on commas that are not inside brackets."""
    items: list[str] = []
    current: list[str] = []
    depth = 0
    for char in expr:
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        if char == "," and depth == 0:
            items.append("".join(current))
            current = []
        else:
            current.append(char)
    if current:
        items.append("".join(current))
    return [item for item in items if item]
