"""The folders the gateway makes for a job: exclusive, never through a link, writable by the job's user alone."""

from __future__ import annotations

import grp
import os
import pwd
import stat
from pathlib import Path

import pytest

from gateway.site import acl
from gateway.site.folders import JOB_FOLDER_MODE, PARENT_MODE, WORK_FOLDER_MODE, FolderError, JobFolders, team_folder
from launchers.runtime.element import write_manifest, write_new_file

TEAM = "team-x"
OTHER = pwd.getpwnam("nobody").pw_uid


class Config:
    """What JobFolders reads of the gateway's configuration; the job runs as ``nobody``."""

    def __init__(self, job_root: Path) -> None:
        self.job_root = job_root

    def unix_group_of(self, team: str) -> str:
        return grp.getgrgid(os.getegid()).gr_name

    def unix_user_of(self, user: str) -> str:
        return "nobody"


def acl_of(path: Path | str) -> list[acl.Entry]:
    return acl.decode(os.getxattr(path, acl.ACCESS, follow_symlinks=False))


def mode(path: Path | str) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def granted(mode_bits: int) -> list[acl.Entry]:
    owner, group = (mode_bits >> 6) & 7, (mode_bits >> 3) & 7
    return [
        acl.Entry(acl.USER_OBJ, owner),
        acl.Entry(acl.USER, 7, OTHER),
        acl.Entry(acl.GROUP_OBJ, group),
        acl.Entry(acl.MASK, 7),
        acl.Entry(acl.OTHER, 0),
    ]


def test_an_access_list_round_trips_in_the_kernels_encoding(tmp_path: Path) -> None:
    value = acl.with_user(0o750, 1234)
    assert value[:4] == (2).to_bytes(4, "little")  # version 2, then 8 bytes per entry
    assert len(value) == 4 + 5 * 8
    assert acl.decode(value) == [
        acl.Entry(acl.USER_OBJ, 7),
        acl.Entry(acl.USER, 7, 1234),
        acl.Entry(acl.GROUP_OBJ, 5),
        acl.Entry(acl.MASK, 7),
        acl.Entry(acl.OTHER, 0),
    ]
    assert acl.encode(acl.decode(value)) == value
    folder = tmp_path / "f"
    folder.mkdir()
    os.setxattr(folder, acl.ACCESS, value)  # the kernel takes it as it is, and gives it back the same
    assert os.getxattr(folder, acl.ACCESS) == value
    assert mode(folder) == 0o770  # the group's bits show the mask
    with pytest.raises(ValueError):
        acl.decode(value[:-1])


def test_a_jobs_folders_are_the_gateways_with_rights_for_the_jobs_user_only(tmp_path: Path) -> None:
    root = tmp_path / "jobs"
    folder = root / TEAM / "j1"
    with JobFolders(Config(root)) as folders:
        folders.job(TEAM, "u", str(folder), str(folder / "job"))
    assert mode(root / TEAM) == PARENT_MODE  # the team may not add entries: no one squats a job's name
    for path, wanted in ((folder, JOB_FOLDER_MODE), (folder / "model", WORK_FOLDER_MODE), (folder / "job", 0o2750)):
        info = os.lstat(path)
        assert stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid()
        assert stat.S_IMODE(info.st_mode) == wanted | 0o020  # the group's bits show the mask (rwx)
        assert acl_of(path) == granted(wanted)  # the group itself: r-x
    assert bool(mode(folder) & stat.S_ISVTX) and not mode(folder / "job") & stat.S_ISVTX


def test_a_batchs_shared_folder_and_a_sweeps_parents(tmp_path: Path) -> None:
    root = tmp_path / "jobs"
    batch = root / TEAM / "batches" / "b1"
    sweep = root / TEAM / "sweep-s1"
    with JobFolders(Config(root)) as folders:
        folders.job(TEAM, "u", str(root / TEAM / "j1"), str(batch))
        folders.job(TEAM, "u", str(root / TEAM / "j2"), str(batch))
        folders.job(TEAM, "u", str(sweep / "tasks" / "0.0"), str(sweep / "array.0"))
    for parent in (root / TEAM / "batches", sweep, sweep / "tasks"):
        assert mode(parent) == PARENT_MODE
        with pytest.raises(OSError):
            os.getxattr(parent, acl.ACCESS)  # no list: the user has no right to add entries
    for shared in (batch, sweep / "array.0"):
        assert acl_of(shared) == granted(WORK_FOLDER_MODE)
    assert acl_of(sweep / "tasks" / "0.0") == granted(JOB_FOLDER_MODE)


@pytest.mark.parametrize("squat", ["symlink", "file", "foreign folder"])
def test_a_name_someone_else_made_first_is_refused_never_followed(tmp_path: Path, squat: str) -> None:
    root = tmp_path / "jobs"
    victim = tmp_path / "victim"
    victim.mkdir(mode=0o700)
    team_folder(root, TEAM, Config(root).unix_group_of(TEAM))
    folder = root / TEAM / "j1"
    if squat == "symlink":
        folder.symlink_to(victim)
    elif squat == "file":
        folder.write_text("x")
    else:
        folder.mkdir()
        os.chown(folder, OTHER, -1)
    with JobFolders(Config(root)) as folders, pytest.raises(FolderError, match=str(folder)):
        folders.job(TEAM, "u", str(folder), str(folder / "job"))
    assert mode(victim) == 0o700 and list(victim.iterdir()) == []  # nothing made, nothing changed there
    with pytest.raises(OSError):
        os.getxattr(victim, acl.ACCESS)


def test_a_link_in_a_shared_parent_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "jobs"
    team_folder(root, TEAM, Config(root).unix_group_of(TEAM))
    (tmp_path / "elsewhere").mkdir()
    (root / TEAM / "batches").symlink_to(tmp_path / "elsewhere")
    with JobFolders(Config(root)) as folders, pytest.raises(FolderError, match="batches"):
        folders.job(TEAM, "u", str(root / TEAM / "j1"), str(root / TEAM / "batches" / "b1"))
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_an_existing_folder_of_the_gateways_is_reused_and_repaired(tmp_path: Path) -> None:
    root = tmp_path / "jobs"
    folder = root / TEAM / "j1"
    with JobFolders(Config(root)) as folders:
        fd = folders.private(TEAM, str(folder))  # a function's folder, made when the request came
        os.close(fd)
        assert mode(folder) == JOB_FOLDER_MODE
        (root / TEAM).chmod(0o3770)  # an older gateway's team folder
        os.chmod(folder, 0o777)
    with JobFolders(Config(root)) as folders:
        folders.job(TEAM, "u", str(folder), str(folder / "job"))
    assert mode(root / TEAM) == PARENT_MODE
    assert acl_of(folder) == granted(JOB_FOLDER_MODE)


def test_a_folder_outside_the_teams_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "jobs"
    with JobFolders(Config(root)) as folders:
        for folder in (str(tmp_path / "x"), str(root / TEAM / ".." / "other" / "j")):
            with pytest.raises(FolderError, match="not a folder inside"):
                folders.job(TEAM, "u", folder, folder + "/job")


def test_the_gateways_files_are_0640_new_and_never_through_a_link(tmp_path: Path) -> None:
    old = os.umask(0)  # whatever the umask: the group never gets to write
    try:
        write_new_file(tmp_path / "a.pkl", b"data")
        write_manifest(tmp_path / "elements-1.json", [{"command": ["x"], "env": {}}])
    finally:
        os.umask(old)
    assert mode(tmp_path / "a.pkl") == 0o640 and mode(tmp_path / "elements-1.json") == 0o640
    (tmp_path / "target").write_text("keep")
    (tmp_path / "link.pkl").symlink_to(tmp_path / "target")
    for name in ("a.pkl", "link.pkl"):
        with pytest.raises(FileExistsError):
            write_new_file(tmp_path / name, b"other")
    assert (tmp_path / "target").read_text() == "keep"
