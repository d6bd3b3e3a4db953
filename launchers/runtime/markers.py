"""Small files the ranks leave in the job folder: the start marker and each rank's trainer exit code.

They are how a job tells the outside what Slurm cannot know: that every rank initialised Horovod (the protocol's
``launching`` -> ``running``), and which rank failed first with which exit code (srun reports the signal that
stopped the others, not the trainer's code). The job folder is on a filesystem every node shares.
"""

from __future__ import annotations

import json
import os
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launchers.files import read_job_file

MARKER_MAX_BYTES = 4096  # a marker is a few bytes of JSON or an exit code; a heartbeat, a few hundred


@dataclass(frozen=True)
class JobMarkers:
    folder: Path
    job_id: str

    @property
    def directory(self) -> Path:
        return self.folder / "markers"

    @property
    def started_path(self) -> Path:
        return self.directory / f"{self.job_id}.started"

    def exit_path(self, rank: int, restart: int) -> Path:
        return self.directory / f"{self.job_id}.{restart}.exit.{rank}"

    def rendezvous_path(self, restart: int) -> Path:
        return self.directory / f"{self.job_id}.{restart}.rendezvous"

    def write_rendezvous(self, restart: int, addr: str, port: int) -> None:
        write_atomic(self.rendezvous_path(restart), json.dumps({"addr": addr, "port": port}))

    def wait_rendezvous(self, restart: int, timeout_s: float) -> tuple[str, int]:
        """Where rank 0 hosts this run's rendezvous, once it says so (the folder is shared by all nodes)."""
        deadline = time.monotonic() + timeout_s
        path = self.rendezvous_path(restart)
        while True:
            try:
                data = json.loads(path.read_text())
                return str(data["addr"]), int(data["port"])
            except (FileNotFoundError, json.JSONDecodeError, KeyError):
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"rank 0 published no rendezvous address in {path} within {timeout_s:.0f} s"
                    ) from None
                time.sleep(0.1)

    def clear_started(self) -> None:
        self.started_path.unlink(missing_ok=True)

    def write_started(self, size: int, restart: int) -> None:
        write_atomic(self.started_path, json.dumps({"size": size, "restart": restart, "time": time.time()}))

    def started(self) -> dict[str, Any] | None:
        return self._json(self.started_path)

    def heartbeat_path(self, rank: int, restart: int) -> Path:
        return self.directory / f"{self.job_id}.{restart}.hb.{rank}"

    def progress_path(self, rank: int, restart: int) -> Path:
        return self.directory / f"{self.job_id}.{restart}.progress.{rank}"

    @property
    def provenance_path(self) -> Path:
        return self.directory / f"{self.job_id}.provenance.json"

    def heartbeats(self, restart: int, ranks: int) -> dict[int, dict[str, Any]]:
        """Each rank's last heartbeat of run ``restart`` (see launchers.runtime.heartbeat); missing ranks left out."""
        found: dict[int, dict[str, Any]] = {}
        for rank in range(ranks):
            data = self._json(self.heartbeat_path(rank, restart))
            if data is not None:
                found[rank] = data
        return found

    def provenance(self) -> dict[str, Any] | None:
        return self._json(self.provenance_path, 1 << 20)

    @staticmethod
    def _json(path: Path, limit: int = MARKER_MAX_BYTES) -> dict[str, Any] | None:
        try:
            data = json.loads(read_job_file(path, limit))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def write_exit(self, rank: int, restart: int, code: int) -> None:
        write_atomic(self.exit_path(rank, restart), f"{code}\n")

    def exit_codes(self, restart: int | None = None) -> list[tuple[float, int, int]]:
        """(mtime, rank, code) of the ranks that finished, oldest first; the latest run unless ``restart``."""
        if restart is None:
            started = self.started()
            restart = int(started["restart"]) if started else 0
        found = []
        for path in self.directory.glob(f"{self.job_id}.{restart}.exit.*"):
            try:
                found.append(
                    (path.stat().st_mtime, int(path.name.rsplit(".", 1)[1]), int(read_job_file(path, MARKER_MAX_BYTES)))
                )
            except (OSError, ValueError):
                continue
        return sorted(found)

    def first_failure(self) -> tuple[int, int] | None:
        """(rank, exit code) of the first rank whose trainer failed."""
        for _, rank, code in self.exit_codes():
            if code != 0:
                return rank, code
        return None


def exit_code_teardown(folder: Path) -> list[str]:
    """Job-script lines after srun: exit with the first failing trainer's code rather than srun's.

    Bash, because with Apptainer the host that runs the job script may have no Python.
    """
    markers = shlex.quote(str(folder / "markers"))
    return [
        "hpcgw_rc=$?",
        # Array elements are known as A_i (see launchers.runtime.task.slurm_job_id).
        "hpcgw_id=${SLURM_ARRAY_JOB_ID:+${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}}",
        f'hpcgw_code=$(ls -tr {markers}/"${{hpcgw_id:-$SLURM_JOB_ID}}.${{SLURM_RESTART_COUNT:-0}}".exit.* 2>/dev/null'
        ' | while read -r f; do c=$(cat "$f"); if [ "$c" != 0 ]; then echo "$c"; break; fi; done)',
        'exit "${hpcgw_code:-$hpcgw_rc}"',
    ]


def write_atomic(path: Path, text: str) -> None:
    """Readers on other nodes see the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text)
    tmp.replace(path)
