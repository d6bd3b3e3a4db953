"""Reading ``sinfo``: one node-oriented query that every caller (the launchers' partition check, the gateway's
request check, the development cluster's status) reads the same way."""

from __future__ import annotations

from dataclasses import dataclass, field

DELIMITER = "|"  # node, partition and state names cannot contain it
FORMAT = "%N|%P|%c|%m|%T|%a"


@dataclass
class NodeInfo:
    name: str
    cpus: int
    mem_mb: int
    state: str  # sinfo's long form, lower case: idle, mixed, allocated, down, drained, ...
    partitions: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PartitionSize:
    nodes: int
    max_cpus: int  # CPUs of its largest node
    max_mem_mb: int  # memory of its largest node (0: not configured)


def sinfo_argv(partition: str | None = None) -> list[str]:
    argv = ["sinfo", "-h", "-N", "-o", FORMAT]
    return [*argv, "-p", partition] if partition else argv


def parse_nodes(text: str) -> dict[str, NodeInfo]:
    """``sinfo -h -N -o FORMAT``: one line per (node, partition); a node in two partitions appears twice."""
    nodes: dict[str, NodeInfo] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        name, partition, cpus, mem_mb, state, _available = line.split(DELIMITER)
        node = nodes.setdefault(
            name, NodeInfo(name, _count(cpus), _count(mem_mb), state.rstrip("*~#!%$@^-").lower())
        )
        node.partitions.append(partition.rstrip("*"))
    return nodes


def partition_sizes(nodes: dict[str, NodeInfo]) -> dict[str, PartitionSize]:
    members: dict[str, list[NodeInfo]] = {}
    for node in nodes.values():
        for partition in node.partitions:
            members.setdefault(partition, []).append(node)
    return {
        p: PartitionSize(len(ns), max(n.cpus for n in ns), max(n.mem_mb for n in ns)) for p, ns in members.items()
    }


def _count(text: str) -> int:
    digits = text.rstrip("+")
    return int(digits) if digits.isdigit() else 0
