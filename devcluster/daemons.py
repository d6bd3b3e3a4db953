"""Start, check and stop the cluster's daemons through pid files of our own.

Each daemon runs in the foreground of a process we spawn (``-D`` / ``--foreground``), so the pid we record is
exactly the process we started. The pid file also holds the process's start time, so a recycled pid is never
mistaken for our daemon, and ``down`` never signals anything it did not start.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

log = logging.getLogger(__name__)


class DaemonError(RuntimeError):
    """A daemon failed to start or to become ready; carries the end of its log."""

    def __init__(self, name: str, message: str, log_tail: str = "") -> None:
        self.name = name
        self.log_tail = log_tail
        text = f"{name}: {message}"
        if log_tail:
            text += f"\n--- last lines of {name}'s log ---\n{log_tail}"
        super().__init__(text)


@dataclass
class Daemon:
    """One long-running process of the cluster."""

    name: str
    argv: Sequence[str]
    run_dir: Path
    log_dir: Path
    env: Mapping[str, str] = field(default_factory=dict)
    tcp_port: int | None = None
    # Extra log files worth showing on failure (the daemon's own LogFile besides its captured stdout).
    extra_logs: Sequence[Path] = ()
    ready: Callable[[], bool] = lambda: True
    ready_timeout_s: float = 60.0

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.name}.hpcgw.pid"

    @property
    def out_file(self) -> Path:
        return self.log_dir / f"{self.name}.out"

    def pid(self) -> int | None:
        """The pid of our running process, or None when it is not running (or the pid was recycled)."""
        try:
            pid_text, start_text = self.pid_file.read_text().split()
            pid, start = int(pid_text), float(start_text)
        except (FileNotFoundError, ValueError):
            return None
        return pid if _process_start_time(pid) == start else None

    def is_running(self) -> bool:
        return self.pid() is not None

    def start(self) -> int:
        """Spawn the daemon detached from our session and record its pid; raises if its port is taken."""
        if self.tcp_port is not None and port_in_use(self.tcp_port):
            raise DaemonError(self.name, f"port {self.tcp_port} on 127.0.0.1 is already in use by another program")
        self.out_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.out_file, "ab") as out:
            out.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} hpcgw starts: {' '.join(self.argv)}\n".encode())
            out.flush()
            proc = subprocess.Popen(
                list(self.argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
                start_new_session=True,
            )
        start = _process_start_time(proc.pid) or 0.0
        self.pid_file.write_text(f"{proc.pid} {start:.2f}\n")
        log.info("started %s (pid %d)", self.name, proc.pid)
        return proc.pid

    def wait_ready(self) -> None:
        """Wait until ``ready()`` holds; fail fast, with the log's end, if the process dies first."""
        deadline = time.monotonic() + self.ready_timeout_s
        while True:
            if not self.is_running():
                raise DaemonError(self.name, "exited during start-up", self.log_tail())
            if self.ready():
                return
            if time.monotonic() > deadline:
                raise DaemonError(self.name, f"not ready after {self.ready_timeout_s:.0f} s", self.log_tail())
            time.sleep(0.25)

    def stop(self, timeout_s: float = 20.0) -> bool:
        """Stop our process (TERM, then KILL); returns whether there was one to stop."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while self.pid() is not None and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.1)
        if self.pid() is not None:
            log.warning("%s (pid %d) ignored SIGTERM; sending SIGKILL", self.name, pid)
            _signal(pid, signal.SIGKILL)
            while self.pid() is not None:
                _reap(pid)
                time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)
        log.info("stopped %s (pid %d)", self.name, pid)
        return True

    def log_tail(self, lines: int = 20) -> str:
        parts = []
        for path in (self.out_file, *self.extra_logs):
            tail = tail_file(path, lines)
            if tail:
                parts.append(f"[{path}]\n{tail}")
        return "\n".join(parts)


def tail_file(path: Path, lines: int) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            text = fh.read().decode(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _process_start_time(pid: int) -> float | None:
    """When the process started (seconds since the epoch, as psutil reads it from /proc); None for a dead or
    zombie pid. With the pid it identifies our process even after the pid is recycled."""
    try:
        proc = psutil.Process(pid)
        if proc.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
            _reap(pid)
            return None
        return round(proc.create_time(), 2)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _reap(pid: int) -> None:
    """Collect a child of ours that exited, so it does not linger as a zombie (only matters in-process)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
