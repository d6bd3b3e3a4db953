"""POSIX access lists in the kernel's own encoding, set through a file descriptor by the file's owner.

The gateway owns every folder it makes for a job, but the job runs as its user, who must write there and no one else
of the team may. Unix modes cannot say "the owner and one other user": an access list can (``user:<job's user>:rwx``
beside ``group::r-x``). The gateway is not root and cannot give the folder away; an owner may set a file's list.

The encoding is Linux's ``system.posix_acl_access`` value (``include/uapi/linux/posix_acl_xattr.h``): a
little-endian u32 version (2), then one entry per line of ``getfacl``'s output: u16 tag, u16 permission bits, u32
id, sorted by tag then id. Written here rather than through ``setfacl``: one system call per folder, no process.
"""

from __future__ import annotations

import os
import struct
from typing import NamedTuple

ACCESS = "system.posix_acl_access"
VERSION = 2
USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
UNDEFINED_ID = 0xFFFFFFFF
_HEADER = struct.Struct("<I")
_ENTRY = struct.Struct("<HHI")


class Entry(NamedTuple):
    tag: int
    perm: int  # 0..7, as in a mode's three bits
    id: int = UNDEFINED_ID


def encode(entries: list[Entry]) -> bytes:
    return _HEADER.pack(VERSION) + b"".join(_ENTRY.pack(*entry) for entry in sorted(entries))


def decode(value: bytes) -> list[Entry]:
    if len(value) < _HEADER.size or (len(value) - _HEADER.size) % _ENTRY.size:
        raise ValueError(f"not an access list: {len(value)} bytes")
    (version,) = _HEADER.unpack_from(value)
    if version != VERSION:
        raise ValueError(f"access list version {version}, not {VERSION}")
    return [Entry(*_ENTRY.unpack_from(value, offset)) for offset in range(_HEADER.size, len(value), _ENTRY.size)]


def with_user(mode: int, uid: int) -> bytes:
    """``mode``'s owner, group and others, and ``uid`` with the owner's rights (the mask lets them through)."""
    owner = (mode >> 6) & 7
    return encode(
        [
            Entry(USER_OBJ, owner),
            Entry(USER, owner, uid),
            Entry(GROUP_OBJ, (mode >> 3) & 7),
            Entry(MASK, owner | (mode >> 3) & 7),
            Entry(OTHER, mode & 7),
        ]
    )


def grant(fd: int, mode: int, uid: int | None) -> None:
    """``mode`` (with its set-group-id and sticky bits) on the open folder ``fd``, and the owner's rights to ``uid``
    as well, unless there is none or it is the owner already. Setting the list sets the mode's permission bits
    (the group's show the mask), so the chmod comes first."""
    os.fchmod(fd, mode)
    if uid is not None and uid != os.geteuid():  # the gateway made the folder: it is the owner
        os.setxattr(fd, ACCESS, with_user(mode, uid))
