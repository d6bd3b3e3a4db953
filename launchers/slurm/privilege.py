"""The one privilege path: a Slurm command that must run as a job's own user (sbatch, scancel, and
scontrol for the health policy's requeue) runs through
``sudo -n -u USER --``, which a sudoers rule limits to those commands and to the mapped users (see
docs/security.md and ``hpcgw cluster users``). ``-n``: sudo never waits for a password; a missing rule is an
error with sudo's own message, not a hang.

Slurm reads ``SLURM_CONF`` from the environment, which sudo resets; the sudoers rule keeps that one variable
(``env_keep``), so the user's command talks to the same cluster as the gateway's."""

from __future__ import annotations

import os
import pwd
import re
from collections.abc import Sequence

SUDO = "sudo"
# The portable POSIX user name (useradd's default check), so a name can never be read as an option.
_UNIX_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


class PrivilegeError(ValueError):
    """A user name that cannot be a Unix account's."""


def check_unix_name(name: str) -> str:
    if not _UNIX_NAME.fullmatch(name):
        raise PrivilegeError(f"{name!r} is not a valid Unix user or group name ([a-z_][a-z0-9_-]*, at most 32)")
    return name


def current_user() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


def as_user_argv(user: str, argv: Sequence[str]) -> tuple[str, ...]:
    """``argv`` run as ``user``: unchanged when this process already is that user."""
    check_unix_name(user)
    if user == current_user():
        return tuple(argv)
    return (SUDO, "-n", "-u", user, "--", *argv)
