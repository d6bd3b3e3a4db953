"""Reading ``scontrol``: ``show job`` (the stand-in for sacct when accounting is down, and the restart count
that Slurm 22.05's sacct does not have), ``show config`` and ``show node``."""

from __future__ import annotations

from launchers.slurm.ids import expand_array_id

SHOW_JOBS_ARGV = ["scontrol", "-o", "show", "job"]
SHOW_CONFIG_ARGV = ["scontrol", "show", "config"]
DEFAULT_MAX_ARRAY_SIZE = 1001  # Slurm's default


def parse_records(text: str) -> list[dict[str, str]]:
    """``scontrol -o show …``: one line per record, ``Key=Value`` fields separated by spaces (the first
    occurrence of a key wins; values with spaces are cut at the space, which none of the fields read here has)."""
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


def job_ids(record: dict[str, str]) -> list[str]:
    """The ids one ``show job`` record stands for: an array's pending range is one record for many elements."""
    if record.get("ArrayJobId") and record.get("ArrayTaskId"):
        return expand_array_id(f"{record['ArrayJobId']}_[{record['ArrayTaskId']}]")
    return [record["JobId"]]


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
