"""Which worker is the active one. Several gateways may serve one PostgreSQL database, but exactly one worker
may submit: two would send the same accepted job twice.

- PostgreSQL: a session-level advisory lock, held by one connection of the active worker. It is released by the
  server the moment that connection ends (the process was killed, the host died), so a standby worker that
  asks every second takes over within a second of the kill. Before each sbatch the active worker checks that its
  connection still answers: a worker cut off from the database stops submitting before anyone else starts.
- SQLite: the database is one file on one host, so a second worker has no use. An exclusive ``flock`` on a file
  beside the database makes a second worker refuse to start, with the first one's pid in the message; the kernel
  drops the lock when its holder dies, however it dies.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
from pathlib import Path
from typing import Protocol

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine, create_engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

log = logging.getLogger(__name__)
# pg_advisory_lock's key space is shared by everything on the database: a constant no one else is likely to use
# ("hpcgw" in ASCII).
ADVISORY_KEY = 0x6870636777


class WorkerConflictError(RuntimeError):
    """Another worker is active where only one may ever run (SQLite)."""


class Lease(Protocol):
    def acquire(self) -> bool:
        """True when this process is (now) the active worker."""

    def held(self) -> bool:
        """Still the active worker; False once the lease is lost (and then :meth:`acquire` again)."""

    def release(self) -> None: ...


def holder_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class AdvisoryLock:
    """A PostgreSQL session-level advisory lock on a connection of its own (not the pool's)."""

    def __init__(self, engine: Engine, key: int = ADVISORY_KEY) -> None:
        self._engine = create_engine(engine.url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        self.key = key
        self._conn: Connection | None = None
        self._held = False

    def acquire(self) -> bool:
        if self._held and self.held():
            return True
        try:
            if self._conn is None:
                self._conn = self._engine.connect()
            self._held = bool(self._conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key}).scalar())
        except DBAPIError as exc:
            log.warning("cannot ask PostgreSQL for the worker lock: %s", str(exc).splitlines()[0])
            self._drop()
        return self._held

    def held(self) -> bool:
        if not self._held or self._conn is None:
            return False
        try:
            self._conn.execute(text("SELECT 1"))
        except DBAPIError as exc:
            log.error("lost the worker lock (its connection failed: %s)", str(exc).splitlines()[0])
            self._drop()
        return self._held

    def release(self) -> None:
        if self._conn is not None and self._held:
            try:
                self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
            except DBAPIError:
                pass
        self._drop()
        self._engine.dispose()

    def _drop(self) -> None:
        self._held = False
        if self._conn is not None:
            try:
                self._conn.close()
            except DBAPIError:
                pass
            self._conn = None


class FileLock:
    """An exclusive flock on ``<database>.worker.lock``; the file says who holds it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> bool:
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 256, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise WorkerConflictError(
                f"another worker ({holder}) is active on this SQLite database ({self.path.with_suffix('')}); "
                "SQLite allows one worker: stop that one, or serve several gateways from PostgreSQL"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder_name().encode(), 0)
        self._fd = fd
        return True

    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


class Alone:
    """An in-memory database has no other process to share it with."""

    def acquire(self) -> bool:
        return True

    def held(self) -> bool:
        return True

    def release(self) -> None:
        pass


def lease_for(engine: Engine) -> Lease:
    if engine.dialect.name == "postgresql":
        return AdvisoryLock(engine)
    database = engine.url.database
    if engine.dialect.name == "sqlite" and database and database != ":memory:":
        return FileLock(Path(database + ".worker.lock"))
    return Alone()
