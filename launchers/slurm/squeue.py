"""Reading ``squeue``: pending jobs with their reason and queue position, and job comments."""

from __future__ import annotations

from dataclasses import dataclass

from launchers.slurm.ids import master_id

DELIMITER = "\x1f"  # comments are user text; the unit separator cannot be typed into one
# -r: one line per pending array element (without it they collapse to ``100_[0-49]``), so that each element of a
# coalesced array or a sweep gets its own reason and queue position.
PENDING_ARGV = ["squeue", "-h", "-r", "-t", "PENDING", "--sort=-p,i", "-o", f"%i{DELIMITER}%r{DELIMITER}%P"]
COMMENTS_ARGV = ["squeue", "-h", "-t", "all", "-o", f"%i{DELIMITER}%k"]
IDS_ARGV = ["squeue", "-h", "-o", "%A"]


@dataclass
class PendingInfo:
    reason: str | None
    partition: str
    position: int  # 1-based, among pending jobs of the same partition, in priority order


def parse_pending(text: str) -> dict[str, PendingInfo]:
    result: dict[str, PendingInfo] = {}
    per_partition: dict[str, int] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        job_id, reason, partition = line.split(DELIMITER, 2)
        per_partition[partition] = per_partition.get(partition, 0) + 1
        result[job_id] = PendingInfo(
            reason=None if reason in ("", "None") else reason, partition=partition, position=per_partition[partition]
        )
    return result


def parse_comments(text: str, prefix: str) -> dict[str, str]:
    """{comment: job id (an array's own id for its elements)} for the comments that start with ``prefix``."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        job_id, _, comment = line.partition(DELIMITER)
        if comment.startswith(prefix):
            found.setdefault(comment, master_id(job_id))
    return found
