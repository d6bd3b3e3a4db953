"""Reading a file a job wrote, from a process that may read more than the job could (the gateway reads every
team's folders through their groups). A job owns what it writes and can replace it with a symlink to another
team's file, or with a FIFO that blocks the reader; read naively, the gateway would serve that file's content to
the job's owner. So only a regular file is read, the last component is never followed, and at most
``max_bytes``. The folders above it belong to the gateway and are sticky (gateway.folders), so a job cannot
swap them."""

from __future__ import annotations

import os
import stat
from pathlib import Path

DEFAULT_MAX_BYTES = 16 << 20


class NotARegularFileError(OSError):
    """The path is a symlink, a FIFO, a device or a folder, or larger than the reader accepts."""


def read_job_file(path: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotARegularFileError(f"{path} is not a regular file")
        if info.st_size > max_bytes:
            raise NotARegularFileError(f"{path} is larger than {max_bytes} bytes")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return handle.read(max_bytes).decode(errors="replace")
    finally:
        os.close(fd)
