"""The container runtime on the development cluster's nodes: which Apptainer the jobs find, and whether the jobs'
users can run an image with it.

Both nodes are this machine, so what holds here holds on every node. Jobs run as their own users, who mount a SIF
with squashfuse through /dev/fuse; without udev (as here) /dev/fuse is created 0600 and only root can open it,
so `up` gives it the mode Debian's udev rule gives it on a normal host (0666).
"""

from __future__ import annotations

import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from launchers.slurm.shell import run

FUSE = Path("/dev/fuse")
FUSE_MODE = 0o666


@dataclass
class ApptainerStatus:
    path: str | None  # what `apptainer` resolves to on PATH, links followed
    version: str | None
    fuse: str  # "usable", or why a job's user cannot mount an image

    @property
    def ok(self) -> bool:
        return self.version is not None and self.fuse == "usable"

    def describe(self) -> str:
        if self.path is None:
            return "not on PATH (make apptainer builds it; trainers then need container_runtime 'none')"
        where = f"{self.version or 'does not run'} at {self.path}"
        return where if self.fuse == "usable" else f"{where}; {self.fuse}"


def prepare_fuse() -> bool:
    """Let the jobs' users open /dev/fuse; returns whether its mode changed."""
    try:
        mode = stat.S_IMODE(FUSE.stat().st_mode)
    except FileNotFoundError:
        return False
    if mode & FUSE_MODE == FUSE_MODE:
        return False
    os.chmod(FUSE, mode | FUSE_MODE)
    return True


def apptainer_status() -> ApptainerStatus:
    found = shutil.which("apptainer")
    if found is None:
        return ApptainerStatus(None, None, _fuse())
    path = str(Path(found).resolve())
    proc = run([found, "--version"], check=False, timeout_s=20)
    version = proc.stdout.strip().removeprefix("apptainer version ") if proc.returncode == 0 else None
    return ApptainerStatus(path, version or None, _fuse())


def _fuse() -> str:
    try:
        mode = stat.S_IMODE(FUSE.stat().st_mode)
    except FileNotFoundError:
        return "no /dev/fuse: images run only as sandbox folders or with --unsquash"
    if mode & FUSE_MODE != FUSE_MODE:
        return f"/dev/fuse is {mode:04o}: users cannot mount a SIF (hpcgw cluster up makes it 0666)"
    return "usable"
