"""Small files the ranks leave in the job folder: the start marker and each rank's trainer exit code.

They are how a job tells the outside what Slurm cannot know: that every rank initialised Horovod (the protocol's
``launching`` -> ``running``), and which rank failed first with which exit code (srun reports the signal that
stopped the others, not the trainer's code). The job folder is on a filesystem every node shares.

The gateway reads these files too, and the job's user can write anything in them: every read goes through
launchers.files (no link on the way from ``root``, bounded, never blocking), and a file whose fields have not the
types and bounds written here counts as absent, so that nothing downstream meets a ``{"restart": "x"}``.
"""

from __future__ import annotations

import json
import os
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launchers.files import (
    JobDataError,
    bounded_int,
    finite_number,
    list_job_folder,
    open_job_file,
    parse_json,
    read_at_most,
    read_job_bytes,
)

MARKER_MAX_BYTES = 4096  # a marker is a few bytes of JSON or an exit code; a heartbeat, a few hundred
PROVENANCE_MAX_BYTES = 1 << 20
MAX_RANKS = 1 << 20
MAX_RESTARTS = 1 << 20
MAX_TEXT = 4096  # a host name, a version, a digest


@dataclass(frozen=True)
class JobMarkers:
    """``root``: the folder trusted not to be a link, from which every read walks (the gateway's job root); the
    job's own folder when None (the launcher library reads its own job)."""

    folder: Path
    job_id: str
    root: Path | None = None

    @property
    def _root(self) -> Path:
        return self.root if self.root is not None else self.folder

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
        """``size`` and ``restart`` as bounded ints and ``time`` as a finite number, or None."""
        data = self._json(self.started_path)
        if data is None:
            return None
        size, restart = bounded_int(data.get("size"), 1, MAX_RANKS), bounded_int(data.get("restart"), 0, MAX_RESTARTS)
        if size is None or restart is None:
            return None
        found: dict[str, Any] = {"size": size, "restart": restart}
        if finite_number(data.get("time")) is not None:
            found["time"] = data["time"]
        return found

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
        for rank in range(min(ranks, MAX_RANKS)):
            data = self._json(self.heartbeat_path(rank, restart))
            if data is not None:
                found[rank] = _heartbeat(data)
        return found

    def provenance(self) -> dict[str, Any] | None:
        data = self._json(self.provenance_path, PROVENANCE_MAX_BYTES)
        return _provenance(data) if data is not None else None

    def _json(self, path: Path, limit: int = MARKER_MAX_BYTES) -> dict[str, Any] | None:
        try:
            data = parse_json(read_job_bytes(path, limit, root=self._root))
        except (OSError, JobDataError):
            return None
        return data if isinstance(data, dict) else None

    def write_exit(self, rank: int, restart: int, code: int) -> None:
        write_atomic(self.exit_path(rank, restart), f"{code}\n")

    def exit_codes(self, restart: int | None = None) -> list[tuple[float, int, int]]:
        """(mtime, rank, code) of the ranks that finished, oldest first; the latest run unless ``restart``."""
        if restart is None:
            started = self.started()
            restart = started["restart"] if started else 0
        prefix = f"{self.job_id}.{restart}.exit."
        try:
            names = list_job_folder(self.directory, self._root)
        except OSError:
            return []
        found = []
        for name in names:
            rank = name[len(prefix) :]
            if not name.startswith(prefix) or not rank.isdigit() or len(rank) > 8:
                continue
            try:
                with open_job_file(self.directory / name, self._root) as f:
                    mtime, text = f.info.st_mtime, read_at_most(f.fd, 32)
                code = int(text)
            except (OSError, ValueError):
                continue
            if -(1 << 16) < code < 1 << 16:  # a process's exit code, or a signal's negative number
                found.append((mtime, int(rank), code))
        return sorted(found)

    def first_failure(self) -> tuple[int, int] | None:
        """(rank, exit code) of the first rank whose trainer failed."""
        for _, rank, code in self.exit_codes():
            if code != 0:
                return rank, code
        return None


def _heartbeat(data: dict[str, Any]) -> dict[str, Any]:
    """The fields launchers.runtime.heartbeat writes, each of its type or left out."""
    numbers = ("time", "progress_at", "interval_s")
    beat: dict[str, Any] = {k: data[k] for k in numbers if finite_number(data.get(k)) is not None}
    beat.update({k: data[k] for k in ("rank", "pid", "beats") if bounded_int(data.get(k), 0, 1 << 62) is not None})
    if isinstance(data.get("host"), str):
        beat["host"] = data["host"][:MAX_TEXT]
    if "progress" in data and (data["progress"] is None or isinstance(data["progress"], dict)):
        beat["progress"] = data["progress"]
    return beat


def _provenance(data: dict[str, Any]) -> dict[str, Any]:
    """What rank 0 recorded (launchers.runtime.provenance), a field of the wrong type left out."""
    texts = ("code_sha256", "model_sha256", "seed", "container", "image_digest")
    found: dict[str, Any] = {
        k: _text(data[k]) for k in texts if k in data and (data[k] is None or isinstance(data[k], str))
    }
    for name, high in (("world_size", MAX_RANKS), ("restart", MAX_RESTARTS)):
        if bounded_int(data.get(name), 0, high) is not None:
            found[name] = data[name]
    if isinstance(data.get("hosts"), list):
        found["hosts"] = [h[:MAX_TEXT] for h in data["hosts"][:MAX_RANKS] if isinstance(h, str)]
    for name in ("versions", "model_files"):
        if isinstance(data.get(name), dict):
            found[name] = {k[:MAX_TEXT]: _text(v) for k, v in data[name].items() if v is None or isinstance(v, str)}
    return found


def _text(value: str | None) -> str | None:
    return value[:MAX_TEXT] if value is not None else None


def exit_code_teardown(folder: Path) -> list[str]:
    """Job-script lines after srun: a requeue rank 0 asked for from inside an image (launchers.runtime.requeue),
    then exit with the first failing trainer's code rather than srun's.

    Bash, because with Apptainer the host that runs the job script may have no Python.
    """
    markers = shlex.quote(str(folder / "markers"))
    return [
        "hpcgw_rc=$?",
        # Array elements are known as A_i (see launchers.runtime.task.slurm_job_id).
        "hpcgw_id=${SLURM_ARRAY_JOB_ID:+${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}}",
        f'if [ -f {markers}/"${{hpcgw_id:-$SLURM_JOB_ID}}.requeue" ]; then'
        f' rm -f {markers}/"${{hpcgw_id:-$SLURM_JOB_ID}}.requeue"; scontrol requeue "$SLURM_JOB_ID"; fi',
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
