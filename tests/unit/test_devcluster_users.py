"""`hpcgw cluster users` opens the private folders above the project's Python to the gateway's user and the teams'
groups only (an access list entry each), never to every account of the machine (``o+x``)."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from devcluster.users import open_for_jobs
from gateway.site import acl

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="access lists on root's folders: root only")


@pytest.fixture
def private_home() -> Iterator[Path]:
    """``<public>/home`` (0700, as /root on a fresh machine) holding ``py/python`` (public below it)."""
    base = Path(tempfile.mkdtemp(dir="/tmp", prefix="hpcgw-users-"))
    base.chmod(0o755)
    home = base / "home"
    (home / "py").mkdir(parents=True)
    home.chmod(0o700)
    (home / "py").chmod(0o755)
    (home / "py" / "python").write_text("#!/bin/sh\n")
    (home / "py" / "python").chmod(0o755)
    yield home
    shutil.rmtree(base)


def _ids(user: str, group: str) -> tuple[int, int]:
    return pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid


def test_only_the_named_user_and_groups_may_traverse(private_home: Path) -> None:
    uid, gid = os.geteuid() + 4242, 4343  # ids need not exist for the list to hold them
    done = open_for_jobs([private_home / "py" / "python"], users=[uid], groups=[gid])
    assert done and all(str(private_home) in line for line in done)
    mode = stat.S_IMODE(private_home.stat().st_mode)
    assert mode & 0o007 == 0  # others: nothing
    entries = acl.decode(os.getxattr(private_home, acl.ACCESS))
    assert acl.Entry(acl.USER, 1, uid) in entries and acl.Entry(acl.GROUP, 1, gid) in entries
    assert any(e.tag == acl.MASK and e.perm & 1 for e in entries)
    assert acl.Entry(acl.USER_OBJ, 7) in entries and acl.Entry(acl.OTHER, 0) in entries
    assert stat.S_IMODE(private_home.parent.stat().st_mode) == 0o755  # a public folder is left as it was
    assert open_for_jobs([private_home / "py" / "python"], users=[uid], groups=[gid]) == []  # idempotent


def test_an_earlier_o_plus_x_is_taken_back(private_home: Path) -> None:
    private_home.chmod(0o701)  # what earlier versions of `hpcgw cluster users` left on /root
    done = open_for_jobs([private_home / "py" / "python"], users=[12345], groups=[23456])
    assert stat.S_IMODE(private_home.stat().st_mode) & 0o007 == 0, done
    assert acl.Entry(acl.GROUP, 1, 23456) in acl.decode(os.getxattr(private_home, acl.ACCESS))


def test_a_team_member_reaches_the_python_and_an_outsider_does_not(private_home: Path) -> None:
    """On the development cluster's accounts: alice (team-a) gets through; carol (team-c only) does not."""
    try:
        hpcgw, team_a = _ids("hpcgw", "team-a")
        _ids("alice", "team-a"), _ids("carol", "team-c")
    except KeyError:
        pytest.skip("the development cluster's users are not created (hpcgw cluster users)")
    python = private_home / "py" / "python"
    open_for_jobs([python], users=[hpcgw], groups=[team_a])

    def can_read(user: str) -> bool:
        argv = ["runuser", "-u", user, "--", "test", "-r", str(python)]
        return subprocess.run(argv, check=False, timeout=30).returncode == 0

    assert can_read("alice") and can_read("hpcgw")
    assert not can_read("carol")
