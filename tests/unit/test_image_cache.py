"""gateway.submit.images' digest cache: a file's bytes are read again whenever its key (device, inode, size, mtime,
ctime of the descriptor opened) changes, and only then."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from gateway.config import GatewayConfig
from gateway.submit import images
from tests.gateway.support import hashed  # noqa: F401  (a fixture)


def settle() -> None:
    """Past images.RACY_NS: a file changed that recently is hashed but not cached."""
    time.sleep(images.RACY_NS / 1e9 + 0.02)


def config(root: Path) -> GatewayConfig:
    return cast(GatewayConfig, SimpleNamespace(image_roots=[root], container_runtime="apptainer"))


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_a_file_rewritten_with_its_size_and_mtime_put_back_is_hashed_again(tmp_path: Path, hashed: list[int]) -> None:
    image = tmp_path / "a.sif"
    image.write_bytes(b"original bytes")
    settle()
    assert images.image_digest(config(tmp_path), str(image)) == sha(b"original bytes")
    assert images.image_digest(config(tmp_path), str(image)) == sha(b"original bytes")
    assert len(hashed) == 1
    before = image.stat()
    # In place (same inode), as many bytes, and the mtime set back with utime: device, inode, size and mtime
    # are all as they were. The ctime is not: every write and every utime sets it to the current time, and no
    # system call sets it to anything else, so it is the part of the key a writer cannot put back.
    with open(image, "r+b") as fh:
        fh.write(b"ORIGINAL")
    os.utime(image, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = image.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)
    assert after.st_ctime_ns != before.st_ctime_ns
    assert images.image_digest(config(tmp_path), str(image)) == sha(b"ORIGINAL bytes")
    assert len(hashed) == 2


def test_a_file_too_fresh_or_written_while_read_is_not_cached(
    tmp_path: Path, hashed: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Within a tick of the kernel's clock a second write could keep the same ctime; a write during the read
    changes the key between the two fstats. Either way the next look reads the file again."""
    image = tmp_path / "a.sif"
    image.write_bytes(b"fresh")
    images.image_digest(config(tmp_path), str(image))
    images.image_digest(config(tmp_path), str(image))
    assert len(hashed) == 2
    settle()
    real = images.hash_file

    def growing(fd: int) -> str:
        digest = real(fd)
        with open(image, "ab") as fh:
            fh.write(b"+")
        return digest

    monkeypatch.setattr(images, "hash_file", growing)
    images.image_digest(config(tmp_path), str(image))
    settle()
    assert images._CACHE.get(images.file_key(image.stat())) is None


def test_the_cache_keeps_the_latest_entries_only() -> None:
    cache = images.DigestCache(2)
    cache.put((1, 1, 1, 1, 1), "a")
    cache.put((2, 2, 2, 2, 2), "b")
    assert cache.get((1, 1, 1, 1, 1)) == "a"  # used: now the latest
    cache.put((3, 3, 3, 3, 3), "c")
    assert cache.get((2, 2, 2, 2, 2)) is None
    assert cache.get((1, 1, 1, 1, 1)) == "a" and cache.get((3, 3, 3, 3, 3)) == "c"


def test_a_mismatch_names_the_image_and_both_digests(tmp_path: Path) -> None:
    image = tmp_path / "a.sif"
    image.write_bytes(b"now")
    mismatch = images.image_mismatch(config(tmp_path), str(image), sha(b"then"))
    assert mismatch is not None and mismatch.changed
    assert str(image) in str(mismatch) and sha(b"then") in str(mismatch) and sha(b"now") in str(mismatch)
    assert images.image_mismatch(config(tmp_path), str(image), sha(b"now")) is None
    labels = cast(GatewayConfig, SimpleNamespace(image_roots=[tmp_path], container_runtime="none"))
    assert images.image_mismatch(labels, str(image), sha(b"then")) is None
    assert images.image_mismatch(config(tmp_path), "docker://alpine:3", None) is None
