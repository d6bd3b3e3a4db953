"""The files a team's jobs and the gateway share, closed to everyone else.

``<job_root>/<team>/`` belongs to the gateway's user and the team's Unix group, mode 3770: the team's jobs (run
as their users, members of the group) write there, the gateway (in every team's group) reads their logs,
markers and metrics, and another team cannot even list it. The set-group-id bit gives every file and folder
below it the team's group. The gateway runs with umask 007, and sudo adds its own 022, so a job's files are
readable by its team and the gateway and by nobody else.

The database and the configuration are the gateway's alone (0600). The gateway reads what a job wrote only as
text or JSON; it never unpickles it (submitit's result pickles are the job's business).
"""

from __future__ import annotations

import grp
import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

GATEWAY_UMASK = 0o007
# set-group-id (files get the team's group) and sticky (only an entry's owner may rename or delete it: a job
# cannot swap a folder the gateway made for a symlink)
TEAM_FOLDER_MODE = 0o3770
SHARED_MODE = 0o2770
PRIVATE_MODE = 0o600


class FolderError(RuntimeError):
    """A folder or file cannot be given the owner or mode the isolation needs."""


def team_folder(job_root: Path, team: str, group: str) -> Path:
    """``<job_root>/<team>``, created or repaired to the team's group and mode 3770."""
    if not job_root.exists():
        job_root.mkdir(parents=True)
        job_root.chmod(0o711)  # every team's users pass through it; no one lists it (the gateway's umask is 007)
    folder = job_root / team
    folder.mkdir(exist_ok=True)
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        raise FolderError(f"team {team}: no Unix group {group!r}") from None
    info = folder.stat()
    try:
        if info.st_gid != gid:
            os.chown(folder, -1, gid)
        if stat.S_IMODE(info.st_mode) != TEAM_FOLDER_MODE:
            folder.chmod(TEAM_FOLDER_MODE)
    except PermissionError as exc:
        raise FolderError(f"cannot give {folder} to group {group!r} with mode 3770: {exc.strerror}") from None
    return folder


def closed_ancestors(job_root: Path) -> list[Path]:
    """Folders above the job root that the teams' users may not traverse: their jobs could not reach it."""
    return [p for p in (job_root, *job_root.parents) if p.exists() and not p.stat().st_mode & 0o001]


def shared_folder(folder: Path | str, *, sticky: bool = False) -> None:
    """A folder the job's user writes in and the gateway reads: the team's group may write, whatever the umask of
    the process that creates it (a test's in-process gateway has its own). ``sticky`` for the job's own folder:
    what the gateway made in it (model/, job/) stays; the submitit folder is not, since submitit replaces its
    own pickles there on a requeue. Two system calls for a new folder: the worker makes two per job it sends."""
    mode = TEAM_FOLDER_MODE if sticky else SHARED_MODE
    try:
        os.mkdir(folder, mode)
    except FileNotFoundError:
        Path(folder).mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        pass
    else:
        os.chmod(folder, mode)  # the umask may have taken the group's bits away
        return
    info = os.stat(folder)
    if not stat.S_ISDIR(info.st_mode):
        raise FileExistsError(f"{folder} exists and is not a folder")
    if stat.S_IMODE(info.st_mode) != mode:
        os.chmod(folder, mode)


def make_private(path: Path) -> None:
    """A file only the gateway's user may read: the database, the configuration (they hold the token hashes)."""
    if not path.exists():
        return
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        try:
            path.chmod(PRIVATE_MODE)
        except PermissionError:
            raise FolderError(
                f"{path} is readable by others and not the gateway's to change (chmod 600 {path})"
            ) from None
        log.info("made %s private (mode 600)", path)
