"""The files a team's jobs and the gateway share, each changed only by the gateway and the job's own user.

``<job_root>/<team>/`` belongs to the gateway's user and the team's Unix group, mode 2750: the gateway (in every
team's group) alone creates entries there; the team may pass through and list; another team cannot even enter.
The set-group-id bit gives every file and folder below it the team's group, so that the gateway reads what a job
writes. The folders that hold several jobs' folders (``batches/``, ``sweep-<id>/``, ``sweep-<id>/tasks/``) are the
gateway's alone in the same way (2750).

A job's own folders (its folder, sticky, and ``model/`` and submitit's folder in it; a batch's or a sweep array's
shared submitit folder, whose jobs are all one user's) are the gateway's, group ``r-x``, with an access list entry
that gives the job's Unix user ``rwx`` (:mod:`gateway.site.acl`): the job writes there, no other member of its team can.
Each is made exclusively, by ``mkdir`` in a folder opened without following links, and its mode and list are set
through its own descriptor: a name someone else made first (a link, a file, a folder) is refused, never followed.

The gateway runs with umask 027 and writes its files for a job (pickles, scripts, manifests, payloads) 0640:
the team reads, only the gateway changes them. The job's user still replaces its own pickles (submitit renames a
new one over the old at a checkpoint) through its write right on the folder, which is not sticky for that reason.

The database and the configuration are the gateway's alone (0600). The gateway reads what a job wrote only as
text or JSON; it never unpickles it (submitit's result pickles are the job's business).
"""

from __future__ import annotations

import errno
import grp
import logging
import os
import pwd
import stat
from pathlib import Path
from typing import Protocol

from gateway.site import acl

log = logging.getLogger(__name__)

GATEWAY_UMASK = 0o027
TEAM_FOLDER_MODE = 0o2750  # set-group-id: files get the team's group; the gateway alone adds entries
PARENT_MODE = 0o2750  # batches/, sweep-<id>/, sweep-<id>/tasks/: the gateway alone adds entries
# a job's folder: sticky, so that its user (who may add entries) cannot swap what the gateway made (model/, job/)
JOB_FOLDER_MODE = 0o3750
# submitit's folder and model/: not sticky, since submitit replaces the gateway's pickles there on a requeue
WORK_FOLDER_MODE = 0o2750
PRIVATE_MODE = 0o600
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class FolderError(RuntimeError):
    """A folder or file cannot be given the owner or mode the isolation needs, or is not the gateway's."""


def team_folder(job_root: Path, team: str, group: str) -> Path:
    """``<job_root>/<team>``, created or repaired to the team's group and mode 2750."""
    if not job_root.exists():
        job_root.mkdir(parents=True)
        job_root.chmod(0o711)  # every team's users pass through it; no one lists it
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        raise FolderError(f"team {team}: no Unix group {group!r}") from None
    root = os.open(job_root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = _folder(root, team, job_root / team, TEAM_FOLDER_MODE)
    finally:
        os.close(root)
    try:
        if os.fstat(fd).st_gid != gid:
            os.fchown(fd, -1, gid)
            os.fchmod(fd, TEAM_FOLDER_MODE)  # a change of group may clear set-group-id
    except PermissionError as exc:
        raise FolderError(f"cannot give {job_root / team} to group {group!r} with mode 2750: {exc.strerror}") from None
    finally:
        os.close(fd)
    return job_root / team


class JobFolders:
    """The folders of one dispatch's jobs: each team's folder checked once and kept open, each shared submitit
    folder made once. A few system calls a job, no process: the worker sends thousands of jobs a cycle."""

    def __init__(self, config: FolderConfig) -> None:
        self.config = config
        self.teams: dict[str, int] = {}
        self.uids: dict[str, int | None] = {}
        self.made: set[str] = set()

    def __enter__(self) -> JobFolders:
        return self

    def __exit__(self, *_: object) -> None:
        for fd in self.teams.values():
            os.close(fd)
        self.teams.clear()

    def job(self, team: str, user: str, folder: str, submit_folder: str) -> None:
        """A job's folder and ``model/`` in it; its submitit folder, in it or shared by its batch or sweep. The
        user gets its rights on a folder only once what the gateway makes inside it exists."""
        uid = self.uid(user)
        fd = self.make(team, folder, JOB_FOLDER_MODE)
        try:
            self.work(fd, os.path.join(folder, "model"), uid)
            if os.path.dirname(submit_folder) == folder:
                self.work(fd, submit_folder, uid)
            elif submit_folder not in self.made:
                shared = self.make(team, submit_folder, WORK_FOLDER_MODE)
                try:
                    acl.grant(shared, WORK_FOLDER_MODE, uid)
                finally:
                    os.close(shared)
                self.made.add(submit_folder)
            acl.grant(fd, JOB_FOLDER_MODE, uid)
        except OSError as exc:
            hint = " (the job root's file system must support POSIX access lists)" if exc.errno == errno.ENOTSUP else ""
            raise FolderError(f"cannot prepare {folder} for user {user}: {exc.strerror or exc}{hint}") from None
        finally:
            os.close(fd)

    def private(self, team: str, folder: str) -> int:
        """A job's folder, the gateway's alone for now (a function's payload is written before dispatch); open."""
        return self.make(team, folder, JOB_FOLDER_MODE)

    def work(self, parent: int, path: str, uid: int | None) -> None:
        """A folder inside the job's that its user writes in (model/, submitit's)."""
        fd = _folder(parent, os.path.basename(path), Path(path), WORK_FOLDER_MODE)
        try:
            acl.grant(fd, WORK_FOLDER_MODE, uid)
        finally:
            os.close(fd)

    def make(self, team: str, folder: str, mode: int) -> int:
        """``folder`` (under the team's) made or found the gateway's, with every folder between; an open descriptor.
        A new folder gets ``mode`` at once: until then its user has no right on it."""
        base = self.team(team)
        parts = _relative(self.config.job_root / team, folder)
        fd = base
        try:
            for depth, name in enumerate(parts):
                last = depth == len(parts) - 1
                child = _folder(fd, name, Path(folder), mode if last else PARENT_MODE)
                if fd != base:
                    os.close(fd)
                fd = child
        except BaseException:
            if fd != base:
                os.close(fd)
            raise
        return fd

    def team(self, team: str) -> int:
        fd = self.teams.get(team)
        if fd is None:
            path = team_folder(self.config.job_root, team, self.config.unix_group_of(team))
            fd = self.teams[team] = os.open(path, _DIR_FLAGS)
        return fd

    def uid(self, user: str) -> int | None:
        if user not in self.uids:
            name = self.config.unix_user_of(user)
            try:
                self.uids[user] = pwd.getpwnam(name).pw_uid
            except KeyError:  # no one gets a right: sudo will refuse to run the job as no one, too
                log.warning("user %s: no Unix account %r; its jobs' folders are the gateway's alone", user, name)
                self.uids[user] = None
        return self.uids[user]


class FolderConfig(Protocol):
    """What :class:`JobFolders` needs of the gateway's configuration (``gateway.config.GatewayConfig`` has it)."""

    job_root: Path

    def unix_group_of(self, team: str) -> str: ...

    def unix_user_of(self, user: str) -> str: ...


def _relative(team_folder: Path, folder: str) -> list[str]:
    parts = Path(folder).parts
    base = team_folder.parts
    if parts[: len(base)] != base or len(parts) == len(base) or any(p in ("..", ".") for p in parts[len(base) :]):
        raise FolderError(f"{folder} is not a folder inside {team_folder}")
    return list(parts[len(base) :])


def _folder(parent: int, name: str, shown: Path, mode: int) -> int:
    """``name`` in ``parent``, made now (with ``mode``) or found to be a real folder of the gateway's; open, never
    through a link. Anything else there (a link, a file, someone else's folder) is refused."""
    try:
        os.mkdir(name, mode, dir_fd=parent)
        made = True
    except FileExistsError:
        made = False
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise FolderError(
                f"{shown}: {name} exists and is not a folder the gateway made (a link or a file)"
            ) from None
        raise
    if not made:
        owner = os.fstat(fd).st_uid
        if owner != os.geteuid():
            os.close(fd)
            raise FolderError(f"{shown}: {name} exists and belongs to uid {owner}, not to the gateway")
    os.fchmod(fd, mode)  # the umask may have taken bits away, an older gateway left other modes
    return fd


def closed_ancestors(job_root: Path) -> list[Path]:
    """Folders above the job root that the teams' users may not traverse: their jobs could not reach it."""
    return [p for p in (job_root, *job_root.parents) if p.exists() and not p.stat().st_mode & 0o001]


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
