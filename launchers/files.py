"""Reading a file a job wrote, from a process that may read more than the job could (the gateway reads every
team's folders through their groups, and its own configuration and database besides).

A job's user owns what the job writes and can replace any of it, or any folder of it, with a symlink to a file
only the reader may read, with a FIFO that blocks the reader, or with a link to a device that never ends. So,
as OpenSSH's ``safe_path`` and systemd's ``chase()`` do, a path is walked one component at a time from a
directory descriptor of a trusted ``root`` with ``O_NOFOLLOW``: a link anywhere below the root is refused, not
only at the end. The file is read through the descriptor that was checked (no stat-then-open), only if it is a
regular file with one name, never blocking (``O_NONBLOCK``), and the bytes really read are bounded (a file's
size may change while it is read, and ``/proc`` files say 0).

What the bytes say is just as untrusted: :func:`parse_json` turns any content into a value or one error, with
bounded nesting, no number Python or a database cannot hold, and strings a database accepts.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

DEFAULT_MAX_BYTES = 16 << 20
MAX_JSON_DEPTH = 32  # a metrics line, a marker or a provenance record is two or three levels deep
MAX_DIR_ENTRIES = 100_000  # a markers folder holds a few files per rank
_DIR_FLAGS = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | os.O_CLOEXEC  # search needs no read permission
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_INT_BOUND = 2**63  # what a database's bigint holds
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")
_UNSAFE_TEXT = re.compile("[\x00\ud800-\udfff]")  # NUL and lone surrogates: PostgreSQL's JSON refuses both


class NotARegularFileError(OSError):
    """The reader refused the path: a link on the way, a FIFO, a device, a folder, a file with several names, a
    path that leaves the root, or more bytes than the reader accepts. The one error for every refusal."""


UnsafeJobFileError = NotARegularFileError


class JobDataError(ValueError):
    """What a job wrote is not data the gateway accepts (bad JSON, bad encoding, too deep, wrong shape)."""


@dataclass(frozen=True)
class JobFile:
    """An open, checked job file: read only through ``fd``; ``info`` is its fstat."""

    fd: int
    info: os.stat_result


def _components(path: Path, root: Path) -> list[str]:
    """The names from ``root`` to ``path`` (a relative path is taken from the current folder, as open() takes it);
    a ``..`` or a path outside the root is refused."""
    if ".." in PurePath(path).parts:
        raise NotARegularFileError(f"{path} climbs with ..")
    try:
        relative = PurePath(os.path.abspath(path)).relative_to(os.path.abspath(root))
    except ValueError:
        raise NotARegularFileError(f"{path} is outside {root}") from None
    names = list(relative.parts)
    if not names or any(n in ("", ".", "..") or "/" in n or "\0" in n for n in names):
        raise NotARegularFileError(f"{path} is not a file name under {root}")
    return names


def _walk(root: Path, names: list[str]) -> int:
    """A descriptor of the folder holding ``names[-1]``, every folder below ``root`` opened without a link."""
    fd = os.open(root, _DIR_FLAGS)
    try:
        for name in names[:-1]:
            try:
                child = os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                raise _refusal(exc, name) from None
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _refusal(exc: OSError, name: str) -> OSError:
    """A link (ELOOP), a non-folder (ENOTDIR), a socket (ENXIO) or a device without a driver is the attack; a
    missing file stays a FileNotFoundError."""
    if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENXIO, errno.ENODEV, errno.EOPNOTSUPP):
        return NotARegularFileError(exc.errno, f"{name}: a link, a socket, a device or not a folder")
    return exc


@contextmanager
def open_job_file(path: Path, root: Path | None = None) -> Iterator[JobFile]:
    """``path`` opened for reading below the trusted ``root`` (``/`` when None: no link on the whole path).
    Raises FileNotFoundError when it does not exist, NotARegularFileError when it is refused."""
    base = Path(root) if root is not None else Path("/")
    names = _components(Path(path), base)
    folder = _walk(base, names)
    try:
        try:
            fd = os.open(names[-1], _FILE_FLAGS, dir_fd=folder)
        except OSError as exc:
            raise _refusal(exc, names[-1]) from None
    finally:
        os.close(folder)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotARegularFileError(f"{path} is not a regular file")
        if info.st_nlink > 1:  # a hard link may name a file of someone else's that the job's user cannot read
            raise NotARegularFileError(f"{path} has {info.st_nlink} names")
        yield JobFile(fd, info)
    finally:
        os.close(fd)


def read_at_most(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    left = limit
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_job_bytes(
    path: Path, max_bytes: int = DEFAULT_MAX_BYTES, *, root: Path | None = None, cut: bool = False
) -> bytes:
    """The whole file, at most ``max_bytes`` really read: more is refused (or, with ``cut``, left unread)."""
    with open_job_file(path, root) as f:
        if f.info.st_size > max_bytes and not cut:  # a size may understate, never a reason to read more
            raise NotARegularFileError(f"{path} is larger than {max_bytes} bytes")
        data = read_at_most(f.fd, max_bytes + 1)
    if len(data) > max_bytes:
        if not cut:
            raise NotARegularFileError(f"{path} is larger than {max_bytes} bytes")
        data = data[:max_bytes]
    return data


def stream_job_bytes(
    path: Path, max_bytes: int, *, root: Path | None = None, chunk_bytes: int = 1 << 20
) -> Iterator[bytes]:
    """The file's bytes in chunks, for an answer that must not hold a whole file in memory per request. Opened and
    checked now (a refusal is raised here, before any answer starts); at most ``max_bytes`` are then read, through
    a copy of the checked descriptor, which the stream closes when it ends or is dropped."""
    with open_job_file(path, root) as f:
        if f.info.st_size > max_bytes:
            raise NotARegularFileError(f"{path} is larger than {max_bytes} bytes")
        return _Chunks(os.dup(f.fd), max_bytes, chunk_bytes)


class _Chunks:
    """An iterator rather than a generator: a generator never started runs no ``finally`` when dropped, and a
    client that goes away before the first chunk would leave the descriptor open."""

    def __init__(self, fd: int, max_bytes: int, chunk_bytes: int) -> None:
        self._fd: int | None = fd
        self._left, self._chunk = max_bytes, chunk_bytes

    def __iter__(self) -> _Chunks:
        return self

    def __next__(self) -> bytes:
        data = os.read(self._fd, min(self._chunk, self._left)) if self._fd is not None and self._left > 0 else b""
        if not data:
            self.close()
            raise StopIteration
        self._left -= len(data)
        return data

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        self.close()


def read_job_file(path: Path, max_bytes: int = DEFAULT_MAX_BYTES, *, root: Path | None = None) -> str:
    """The file as text (bytes that are not UTF-8 replaced); see :func:`read_job_bytes`."""
    return read_job_bytes(path, max_bytes, root=root).decode(errors="replace")


def tail_job_bytes(path: Path, max_bytes: int, *, root: Path | None = None) -> bytes:
    """At most the last ``max_bytes`` bytes (a trainer's log can be gigabytes): a seek on the checked descriptor,
    then a bounded read, whatever the size says or becomes."""
    with open_job_file(path, root) as f:
        os.lseek(f.fd, max(0, f.info.st_size - max_bytes), os.SEEK_SET)
        return read_at_most(f.fd, max_bytes)


def list_job_folder(path: Path, root: Path | None = None, limit: int = MAX_DIR_ENTRIES) -> list[str]:
    """The names in a folder a job writes in, walked like a file (no link on the way, nor the folder itself)."""
    base = Path(root) if root is not None else Path("/")
    names = _components(Path(path), base)
    folder = _walk(base, [*names, ""])
    try:
        fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=folder)
    finally:
        os.close(folder)
    found: list[str] = []
    try:
        with os.scandir(fd) as entries:  # scandir reads a duplicate of fd
            for entry in entries:
                found.append(entry.name)
                if len(found) >= limit:
                    break
    finally:
        os.close(fd)
    return found


def parse_json(data: bytes | str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``data`` as JSON, or JobDataError, whatever it holds: nesting deeper than ``max_depth`` (checked before
    parsing, so 100,000 brackets cost a scan), invalid UTF-8, integers beyond a bigint and non-finite numbers
    (kept as their text), NUL and lone surrogates (replaced)."""
    if isinstance(data, bytes):
        try:
            text = data.decode()
        except UnicodeDecodeError:
            raise JobDataError("not UTF-8") from None
    else:
        text = data
    if _depth(text) > max_depth:
        raise JobDataError(f"nested deeper than {max_depth}")
    try:
        value = json.loads(text, parse_int=_bounded_int, parse_float=_finite_float, parse_constant=str)
    except (ValueError, RecursionError) as exc:
        raise JobDataError(f"not JSON: {str(exc)[:200]}") from None
    return _clean(value)


def _depth(text: str) -> int:
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return 0  # cannot be deeper than the brackets it has
    depth = deepest = 0
    for match in _BRACKET.finditer(_STRING.sub('""', text)):
        depth += 1 if match.group() in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def _bounded_int(text: str) -> int | str:
    if len(text) > 20:
        return text
    value = int(text)
    return value if -_INT_BOUND <= value < _INT_BOUND else text


def _finite_float(text: str) -> float | str:
    value = float(text)
    return value if math.isfinite(value) else text


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return _UNSAFE_TEXT.sub("\ufffd", value) if _UNSAFE_TEXT.search(value) else value
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def bounded_int(value: Any, low: int, high: int) -> int | None:
    """``value`` when it is an int (not a bool) within ``low..high``; what a marker's field must be."""
    return value if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high else None


def finite_number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None
