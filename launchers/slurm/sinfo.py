"""Reading ``sinfo``: one node-oriented query, one row per (node, partition), that every caller (the launchers'
partition check, the gateway's request check, the development cluster's status) reads the same way."""

from __future__ import annotations

from dataclasses import dataclass

DELIMITER = "|"  # node, partition and state names cannot contain it
FORMAT = DELIMITER.join(("%N", "%P", "%c", "%m", "%T", "%a"))


@dataclass(frozen=True)
class SinfoRow:
    node: str
    partition: str
    cpus: int
    mem_mb: int  # 0: not configured
    state: str  # sinfo's long form, lower case, flags removed: idle, mixed, allocated, down, drained, ...
    available: str  # the partition's availability: up, down, drain, inact


@dataclass(frozen=True)
class PartitionSize:
    nodes: int
    max_cpus: int  # CPUs of its largest node
    max_mem_mb: int  # memory of its largest node (0: not configured)


def sinfo_argv(partition: str | None = None) -> list[str]:
    argv = ["sinfo", "-h", "-N", "-o", FORMAT]
    return [*argv, "-p", partition] if partition else argv


def parse_sinfo(text: str) -> list[SinfoRow]:
    rows = []
    for line in text.splitlines():
        if not line.strip():
            continue
        node, partition, cpus, mem_mb, state, available = line.split(DELIMITER)
        rows.append(
            SinfoRow(
                node=node,
                partition=partition.rstrip("*"),
                cpus=_count(cpus),
                mem_mb=_count(mem_mb),
                state=state.rstrip("*~#!%$@^-").lower(),
                available=available,
            )
        )
    return rows


def partition_sizes(rows: list[SinfoRow]) -> dict[str, PartitionSize]:
    members: dict[str, list[SinfoRow]] = {}
    for row in rows:
        members.setdefault(row.partition, []).append(row)
    return {
        p: PartitionSize(len({r.node for r in rs}), max(r.cpus for r in rs), max(r.mem_mb for r in rs))
        for p, rs in members.items()
    }


def _count(text: str) -> int:
    digits = text.rstrip("+")
    return int(digits) if digits.isdigit() else 0
