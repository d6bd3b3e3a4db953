"""An algorithm version's image: what the gateway records of it (its SHA-256) without becoming a file oracle, and
the check that what runs is still what was recorded.

The gateway can read files no token holder can: its configuration, its database, every team's folders. Were it to
hash whatever path a request names, the answer (a digest, or none) would tell whether a file exists and what it
holds. So a local image is looked at only below the site's ``image_roots``, through directory descriptors that
follow no link; any other local path is refused with the same words whether or not it exists. With container
runtime 'none' an image is never run, only recorded: a path outside the roots stays a label, never touched.

A version's image is pinned: with runtime 'apptainer' every submission hashes the file again and is refused when it
no longer matches (re-registering the version, ``POST /v1/algorithms/{name}/versions/{version}/digest``, is how
an image changes). Hashing a 400 MB image per request would cost a second each, so digests are cached per
(device, inode, size, mtime, ctime) of the descriptor opened: an unchanged file costs one walk and one fstat.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from gateway.config import GatewayConfig
from gateway.errors import InvalidRequestError

# Images named by a registry reference, which Apptainer pulls itself: nothing local is looked at.
REMOTE_SCHEMES = ("docker://", "oras://", "library://", "shub://", "https://", "http://")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_BLOCK = 1 << 20
CACHE_ENTRIES = 64  # images a gateway runs: a few per algorithm; an entry is a key and 71 characters
# A file changed this recently is hashed but not cached ("racy git"): a kernel stamps ctime from a clock that
# ticks every 1-10 ms, so a second write within the tick of the one hashed could keep the very same key.
RACY_NS = 50_000_000

FileKey = tuple[int, int, int, int, int]


def image_digest(config: GatewayConfig, image: str) -> str | None:
    """``sha256:…`` of a local image below an image root; the digest part of ``repo@sha256:…``; else None.
    Raises a 422 for a local path outside the roots where the image would run (container runtime apptainer)."""
    if "@sha256:" in image:
        return "sha256:" + image.rsplit("@sha256:", 1)[1]
    if image.startswith(REMOTE_SCHEMES):
        return None
    path = PurePosixPath(image)
    root = _root_of(config.image_roots, path)
    if root is None:
        if config.container_runtime == "none":
            return None  # a label: never run, never opened
        raise InvalidRequestError(
            f"image {image!r} is not below one of this gateway's image_roots; name a file there, or a registry "
            "reference (docker://…, oras://…, or one with @sha256:…)",
            field="image",
        )
    try:
        return _digest_below(root, path.relative_to(root).parts)
    except OSError:
        raise InvalidRequestError(f"image {image!r} is no regular file below {root}", field="image") from None


@dataclass(frozen=True)
class ImageMismatch:
    """Why a pinned image may not run now: ``found`` is the file's digest now, None when it cannot be hashed."""

    image: str
    recorded: str | None
    found: str | None
    why: str

    @property
    def changed(self) -> bool:
        """The file is there and readable but holds other bytes: re-registering the version would pin it."""
        return self.found is not None

    def __str__(self) -> str:
        return self.why


def image_mismatch(config: GatewayConfig, image: str, recorded: str | None) -> ImageMismatch | None:
    """None when ``image`` may run as recorded: runtime 'none' (an image is a label there), a registry reference
    (Apptainer pulls it; ``@sha256:`` pins it), or a local file whose SHA-256 is still ``recorded``. Costs one
    guarded walk and one fstat while the file is unchanged (the cache); a hash of the file after it changed."""
    if config.container_runtime != "apptainer" or "@sha256:" in image or image.startswith(REMOTE_SCHEMES):
        return None
    if recorded is None:
        why = f"image {image} has no recorded digest (it was registered where images are not run)"
        return ImageMismatch(image, None, None, why)
    path = PurePosixPath(image)
    root = _root_of(config.image_roots, path)
    if root is None:
        why = f"image {image} is no longer below one of this gateway's image_roots"
        return ImageMismatch(image, recorded, None, why)
    try:
        found = _digest_below(root, path.relative_to(root).parts)
    except OSError as exc:
        reason = "a link, which is not followed" if exc.errno == errno.ELOOP else os.strerror(exc.errno or errno.EIO)
        return ImageMismatch(image, recorded, None, f"image {image} cannot be read ({reason})")
    if found == recorded:
        return None
    why = f"image {image} no longer matches its recorded digest: recorded {recorded}, found now {found}"
    return ImageMismatch(image, recorded, found, why)


class ImageChangedError(RuntimeError):
    """A waiting job's image stopped matching after its submission was accepted (a job can wait for its team's
    quota for hours): it fails at dispatch with the reason, instead of running bytes nobody registered."""


class DispatchImages:
    """The dispatch-time check, once per (image, recorded digest) in a cycle: a thousand queued jobs of one
    version cost one walk and one fstat, not a thousand."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self._seen: dict[tuple[str, str | None], ImageChangedError | None] = {}

    def refusal(self, image: str, recorded: str | None) -> ImageChangedError | None:
        key = (image, recorded)
        if key not in self._seen:
            self._seen[key] = _refusal(image_mismatch(self.config, image, recorded))
        return self._seen[key]


def _refusal(mismatch: ImageMismatch | None) -> ImageChangedError | None:
    """Short enough for a job's reason (256 characters) with both digests in it."""
    if mismatch is None:
        return None
    if mismatch.changed:
        return ImageChangedError(
            f"not submitted: its image changed after the job was accepted (recorded {mismatch.recorded}, now "
            f"{mismatch.found}); re-register the version, then submit again"
        )
    return ImageChangedError(f"not submitted: {mismatch}")


def check_image(
    config: GatewayConfig, image: str, recorded: str | None, algorithm: str, version: str, *, advice: str = ""
) -> None:
    """A submission of ``algorithm`` ``version`` is refused (422, field algorithm_version) when its image is not
    the one recorded: a job never runs bytes nobody registered. ``advice``: what to do, where re-registering the
    version is not it (a sweep's retry runs what its tasks ran)."""
    mismatch = image_mismatch(config, image, recorded)
    if mismatch is None:
        return
    raise InvalidRequestError(
        f"algorithm {algorithm!r} version {version!r}: {mismatch}; {advice or _advice(mismatch, algorithm, version)}",
        field="algorithm_version",
    )


def _advice(mismatch: ImageMismatch, algorithm: str, version: str) -> str:
    if mismatch.changed or mismatch.recorded is None:
        return (
            "an algorithm version's image is pinned: to run the file as it is now, re-register the version "
            f"(POST /v1/algorithms/{algorithm}/versions/{version}/digest, by its team or an admin), or put the "
            "recorded file back"
        )
    return "put the recorded file back, or register a new version whose image exists"


def clear_cache() -> None:
    """Forget every cached digest (tests; a process that wants every image hashed again)."""
    _CACHE.clear()


def file_key(st: os.stat_result) -> FileKey:
    """What identifies a file's bytes without reading them. The ctime is the part nobody can forge: a writer can
    put back the size and (with utime) the mtime after rewriting a file, but every write and every utime sets the
    ctime to now, and only the clock (root's) can set it back. Device and inode tell apart two files at the same
    path (an image replaced by a rename keeps neither)."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def hash_file(fd: int) -> str:
    """The SHA-256 of what ``fd`` reads from its start (the one place that reads an image's bytes)."""
    digest = hashlib.sha256()
    offset = 0
    while block := os.pread(fd, _BLOCK, offset):
        digest.update(block)
        offset += len(block)
    return "sha256:" + digest.hexdigest()


class DigestCache:
    """A small LRU of ``FileKey`` -> digest, shared by the API's threads (request handlers, the intake writer)."""

    def __init__(self, entries: int) -> None:
        self.entries = entries
        self._digests: OrderedDict[FileKey, str] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: FileKey) -> str | None:
        with self._lock:
            digest = self._digests.get(key)
            if digest is not None:
                self._digests.move_to_end(key)
            return digest

    def put(self, key: FileKey, digest: str) -> None:
        with self._lock:
            self._digests[key] = digest
            self._digests.move_to_end(key)
            while len(self._digests) > self.entries:
                self._digests.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._digests.clear()


_CACHE = DigestCache(CACHE_ENTRIES)


def _root_of(roots: list[Path], path: PurePosixPath) -> Path | None:
    """The image root ``path`` lies below, lexically: an absolute path without ``.`` or ``..`` components."""
    if not path.is_absolute() or any(part in (".", "..") for part in path.parts):
        return None
    for root in roots:
        if path != PurePosixPath(root) and path.is_relative_to(PurePosixPath(root)):
            return root
    return None


def _digest_below(root: Path, names: tuple[str, ...]) -> str:
    """``sha256:…`` of the file, read through the descriptor that was checked; from the cache when the stat of
    that same descriptor says the file is unchanged. A file written to while it was read, or too lately (RACY_NS),
    is not cached."""
    fd = _open_below(root, names)
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        key = file_key(before)
        cached = _CACHE.get(key)
        if cached is not None:
            return cached
        digest = hash_file(fd)
        if file_key(os.fstat(fd)) == key and time.time_ns() - before.st_ctime_ns > RACY_NS:
            _CACHE.put(key, digest)
        return digest
    finally:
        os.close(fd)


def _open_below(root: Path, names: tuple[str, ...]) -> int:
    """Every folder below the (trusted) root opened without following a link, then the file itself: a link put in
    an image root leads nowhere."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for name in names[:-1]:
            child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
        return os.open(names[-1], _FILE_FLAGS, dir_fd=fd)
    finally:
        os.close(fd)
