"""The Debian packages a local cluster is built from, and installing the missing ones when we are root."""

from __future__ import annotations

import os
import shutil

from launchers.slurm.shell import CommandError, run

# package -> a program it provides (checked too, for systems where dpkg says nothing useful)
CLUSTER_PACKAGES: dict[str, str] = {
    "slurm-wlm": "slurmctld",
    "slurmdbd": "slurmdbd",
    "munge": "munged",
    "mariadb-server": "mariadbd",
    "sudo": "sudo",  # the gateway's one privilege path: sbatch and scancel as the job's user
}


class PackagesMissingError(RuntimeError):
    """Packages are missing and we may not install them."""


def missing_packages() -> list[str]:
    missing = []
    for package, program in CLUSTER_PACKAGES.items():
        if shutil.which(program) is None and not os.path.exists(f"/usr/sbin/{program}"):
            missing.append(package)
    return missing


def ensure_packages(*, allow_install: bool = True) -> list[str]:
    """Install what is missing (root only); returns what was installed. Raises with the exact apt command."""
    missing = missing_packages()
    if not missing:
        return []
    command = "apt-get install -y " + " ".join(missing)
    if os.geteuid() != 0 or not allow_install:
        raise PackagesMissingError(
            f"the local cluster needs these Debian packages, which are not installed: {', '.join(missing)}.\n"
            f"Install them as root (sudo {command}), then run this again."
        )
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    try:
        run(["apt-get", "install", "-y", "-q", *missing], env=env, timeout_s=1800)
    except CommandError:
        run(["apt-get", "update", "-q"], env=env, timeout_s=600)
        run(["apt-get", "install", "-y", "-q", *missing], env=env, timeout_s=1800)
    still = missing_packages()
    if still:
        raise PackagesMissingError(f"installing {', '.join(missing)} left {', '.join(still)} missing")
    return missing
