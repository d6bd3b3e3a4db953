"""An algorithm version's image: what the gateway records of it (its SHA-256) without becoming a file oracle.

The gateway can read files no token holder can: its configuration, its database, every team's folders. Were it to
hash whatever path a request names, the answer (a digest, or none) would tell whether a file exists and what it
holds. So a local image is looked at only below the site's ``image_roots``, through directory descriptors that
follow no link; any other local path is refused with the same words whether or not it exists. With container
runtime 'none' an image is never run, only recorded: a path outside the roots stays a label, never touched.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path, PurePosixPath

from gateway.config import GatewayConfig
from gateway.errors import InvalidRequestError

# Images named by a registry reference, which Apptainer pulls itself: nothing local is looked at.
REMOTE_SCHEMES = ("docker://", "oras://", "library://", "shub://", "https://", "http://")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_BLOCK = 1 << 20


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
        return "sha256:" + _hash_below(root, path.relative_to(root).parts)
    except OSError:
        raise InvalidRequestError(f"image {image!r} is no regular file below {root}", field="image") from None


def _root_of(roots: list[Path], path: PurePosixPath) -> Path | None:
    """The image root ``path`` lies below, lexically: an absolute path without ``.`` or ``..`` components."""
    if not path.is_absolute() or any(part in (".", "..") for part in path.parts):
        return None
    for root in roots:
        if path != PurePosixPath(root) and path.is_relative_to(PurePosixPath(root)):
            return root
    return None


def _hash_below(root: Path, names: tuple[str, ...]) -> str:
    """Every folder below the (trusted) root opened without following a link, then the file itself, read through
    the descriptor that was checked: a link put in an image root leads nowhere."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for name in names[:-1]:
            child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
        file_fd = os.open(names[-1], _FILE_FLAGS, dir_fd=fd)
    finally:
        os.close(fd)
    try:
        if not stat.S_ISREG(os.fstat(file_fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        digest = hashlib.sha256()
        while block := os.read(file_fd, _BLOCK):
            digest.update(block)
        return digest.hexdigest()
    finally:
        os.close(file_fd)
