"""The one place where the project runs external commands.

Every Slurm, MariaDB or munge call goes through :func:`run`, so that a failure always carries the command, its
exit code and its stderr, and so that tests have a single seam to replace.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 60.0


@dataclass
class CommandError(Exception):
    """An external command failed, could not start, or ran past its timeout."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str = ""
    stderr: str = ""

    def __str__(self) -> str:
        detail = (self.stderr or self.stdout).strip()
        tail = "\n".join(detail.splitlines()[-20:])
        return f"{self.argv[0]} exited with {self.returncode}: {' '.join(self.argv)}" + (f"\n{tail}" if tail else "")


class CommandNotFoundError(CommandError):
    """The executable is not installed or not on PATH."""


class CommandTimeoutError(CommandError):
    """The command ran past its timeout and was killed."""


def run(
    argv: Sequence[str],
    *,
    timeout_s: float | None = DEFAULT_TIMEOUT_S,
    env: Mapping[str, str] | None = None,
    input_text: str | None = None,
    check: bool = True,
    cwd: str | os.PathLike[str] | None = None,
    as_user: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` without a shell and return its completed process.

    ``env`` is merged over the current environment. With ``check`` (the default), a non-zero exit raises
    :class:`CommandError`; callers that treat some exit codes as answers pass ``check=False``. ``as_user`` runs
    the command as that Unix user through the one privilege path (:mod:`launchers.slurm.privilege`).
    """
    args = tuple(str(a) for a in argv)
    if as_user is not None:
        from launchers.slurm.privilege import as_user_argv

        args = as_user_argv(as_user, args)
    full_env = None if env is None else {**os.environ, **env}
    log.debug("run: %s", " ".join(args))
    try:
        proc = subprocess.run(
            args,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=full_env,
            input=input_text,
            cwd=cwd,
            check=False,
        )
    except FileNotFoundError as exc:
        raise CommandNotFoundError(args, 127, "", str(exc)) from exc
    except subprocess.TimeoutExpired as exc:
        raise CommandTimeoutError(
            args, 124, _text(exc.stdout), _text(exc.stderr) + f"\ntimed out after {timeout_s} s"
        ) from exc
    if check and proc.returncode != 0:
        raise CommandError(args, proc.returncode, proc.stdout, proc.stderr)
    return proc


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data
