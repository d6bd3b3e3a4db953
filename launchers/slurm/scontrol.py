"""Reading ``scontrol``: ``show config`` and ``show node``, the site's own text.

Not ``show job``: its one-line records are ``Key=Value`` split on spaces, and a job's name and comment (any
user's) can hold spaces, ``Key=Value`` pairs and newlines, so one user's job can print as another's. slurmctld's
jobs are read from ``squeue --json`` instead (:mod:`launchers.slurm.squeue`)."""

from __future__ import annotations

SHOW_CONFIG_ARGV = ["scontrol", "show", "config"]
DEFAULT_MAX_ARRAY_SIZE = 1001  # Slurm's default


def parse_records(text: str) -> list[dict[str, str]]:
    """``scontrol -o show config|node``: one line per record, ``Key=Value`` fields separated by spaces (the first
    occurrence of a key wins). Only for records no user writes into."""
    records = []
    for line in text.splitlines():
        fields: dict[str, str] = {}
        for item in line.split():
            key, sep, value = item.partition("=")
            if sep and key not in fields:
                fields[key] = value
        if fields:
            records.append(fields)
    return records


def parse_config_value(text: str, key: str) -> str | None:
    """One ``Key = Value`` line of ``scontrol show config``."""
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and name.strip() == key:
            return value.strip()
    return None


def max_array_size(text: str) -> int:
    value = parse_config_value(text, "MaxArraySize")
    return int(value) if value and value.isdigit() else DEFAULT_MAX_ARRAY_SIZE


def node_address(text: str) -> str | None:
    """NodeAddr from ``scontrol -o show node NAME``."""
    for record in parse_records(text):
        if record.get("NodeAddr"):
            return record["NodeAddr"]
    return None
